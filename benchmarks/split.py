"""A model split between cuda:0 and the CPU (accelerate's dispatch_model), timed by phasetime.

Half of the language model's decoder layers are put on the CPU (accelerate moves the hidden
states across at each boundary); the call is measured with the probe and, independently, by
the wall clock around generate() with a synchronisation on each side. Prints both totals
(the probe's must be within the wall clock's, never above it), the phases and the clock
phasetime chose. Needs a GPU and accelerate; says so and exits 0 without them.

    python benchmarks/split.py [--model llava-1.4b-random] [--tokens 16] [--calls 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

import phasetime  # noqa: E402
from phasetime.experiments import models  # noqa: E402
from phasetime.experiments.data.inputs import build_inputs, synthetic_image  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="llava-1.4b-random")
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--calls", type=int, default=5)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("split: skipped (no CUDA device)")
        return
    try:
        from accelerate import dispatch_model
    except ImportError:
        print("split: skipped (accelerate is not installed)")
        return
    model, processor = models.load(args.model, device="cpu", dtype="bfloat16")
    layers = [name for name, _ in model.named_modules() if name.endswith(".layers") and "language" in name]
    prefix = layers[0] if layers else "model.language_model.layers"
    count = len(dict(model.named_modules())[prefix])
    device_map = {"": 0, **{f"{prefix}.{i}": "cpu" for i in range(count // 2, count)}}
    model = dispatch_model(model, device_map=device_map)
    inputs = build_inputs(processor, "Describe this image.", [synthetic_image(336)], batch_size=1)
    inputs = {k: v.to("cuda:0") if hasattr(v, "to") else v for k, v in inputs.items()}
    kwargs = dict(max_new_tokens=args.tokens, min_new_tokens=args.tokens)
    model.generate(**inputs, **kwargs)  # warm-up
    walls, measured = [], []
    for _ in range(args.calls):
        torch.cuda.synchronize()
        start = time.perf_counter()
        model.generate(**inputs, **kwargs)
        torch.cuda.synchronize()
        walls.append(1000 * (time.perf_counter() - start))
        measured.append(phasetime.measure(model, inputs, **kwargs))
    m = measured[-1]
    print(f"{torch.cuda.get_device_name(0)}; {args.model}: layers {count // 2}..{count - 1} of {prefix} on the CPU, "
          f"N = {args.tokens}, timer {m.timer}")
    med = lambda xs: statistics.median(xs)  # noqa: E731
    print(f"wall clock total {med(walls):.1f} ms; probe total {med([x.total_ms for x in measured]):.1f} ms, vision "
          f"{med([x.vision_ms for x in measured]):.1f}, prefill {med([x.prefill_ms for x in measured]):.1f}, TTFT "
          f"{med([x.ttft_ms or 0 for x in measured]):.1f}, TPOT {med([x.tpot_ms or 0 for x in measured]):.2f} ms")


if __name__ == "__main__":
    main()
