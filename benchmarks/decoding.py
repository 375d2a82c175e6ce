"""Greedy, assisted (a random draft and a perfect one), prompt lookup and beam search, timed by phasetime.

Prints, per mode, the medians over ``--calls`` measured calls (after one warm-up) of TTFT,
decode, TPOT, the draft and verify parts of decode, round 1's draft, the rounds and the
acceptance rate; and checks that every mode returned the greedy tokens where it must
(assisted greedy decoding is exact). The perfect draft is a copy of the target (it always
agrees, 5 candidates a round) on a text model; the built-in random draft never agrees: the
two ends of acceptance.

    python benchmarks/decoding.py [--model tiny-llama] [--draft tiny-llama-draft] [--tokens 12] [--calls 7]
    python benchmarks/decoding.py --model tiny-llava --draft tiny-llava-draft      # a VLM, a text draft
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

import phasetime  # noqa: E402
from phasetime.experiments import models  # noqa: E402
from phasetime.experiments.data.inputs import build_inputs, synthetic_image  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-llama")
    parser.add_argument("--draft", default="tiny-llama-draft")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--tokens", type=int, default=12)
    parser.add_argument("--calls", type=int, default=7)
    parser.add_argument("--prompt", default="hello world, hello world, hello world, hello")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model, processor = models.load(args.model, device=args.device)
    device = next(model.parameters()).device
    draft, _ = models.load(args.draft, device=str(device))
    images = [synthetic_image(64)] if models.is_vision_language(processor) else []
    inputs = build_inputs(processor, args.prompt, images, batch_size=1)
    inputs = {k: v.to(device) if hasattr(v, "to") else v for k, v in inputs.items()}
    n = args.tokens
    twin = copy.deepcopy(model)  # the target as its own draft, separately cached: it always agrees
    twin.generation_config.assistant_confidence_threshold = 0.0  # random weights are never "confident"
    twin.generation_config.num_assistant_tokens = 5
    twin.generation_config.num_assistant_tokens_schedule = "constant"
    modes = {
        "greedy": {},
        "assisted, random draft": {"assistant_model": draft},
        "assisted, copy (5/round)": {"assistant_model": twin},
        "prompt lookup (k=3)": {"prompt_lookup_num_tokens": 3},
        "beam search (3 beams)": {"num_beams": 3},
    }
    if models.is_vision_language(processor):
        del modes["prompt lookup (k=3)"]  # transformers proposes image placeholder tokens and fails
    print(f"{torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}; {args.model}, N = {n}, "
          f"medians of {args.calls} calls")
    print(f"{'mode':26} {'ttft':>7} {'decode':>8} {'tpot':>6} {'draft':>7} {'verify':>7} {'1st draft':>9} "
          f"{'rounds':>6} {'accept':>6}")
    greedy = None
    for name, kwargs in modes.items():
        phasetime.measure(model, inputs, max_new_tokens=n, min_new_tokens=n, **kwargs)  # warm-up
        calls = [phasetime.measure(model, inputs, max_new_tokens=n, min_new_tokens=n, **kwargs)
                 for _ in range(args.calls)]

        def med(value: object) -> float:
            return statistics.median(getattr(m, str(value)) or 0.0 for m in calls)

        rounds = statistics.median(len(m.rounds) for m in calls)
        rate = calls[0].acceptance_rate
        print(f"{name:26} {med('ttft_ms'):7.2f} {med('decode_ms'):8.2f} {med('tpot_ms'):6.2f} {med('draft_ms'):7.2f} "
              f"{med('verify_ms'):7.2f} {med('first_draft_ms'):9.2f} {rounds:6.0f} "
              f"{'-' if rate is None else f'{rate:.2f}':>6}")
        if greedy is None:
            greedy = calls[0].output_ids
        elif "assisted" in name and not torch.equal(calls[0].output_ids, greedy):
            raise SystemExit(f"{name}: tokens differ from greedy decoding")


if __name__ == "__main__":
    main()
