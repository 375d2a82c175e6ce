"""A compiled static cache under the probe, and which physical GPU NVML is told (for gpu.sh).

generate() compiles the forward for a static cache (``compile_config``); the first calls
compile, later ones should not. Prints, per measured call, the graphs compiled during it
(``compiles``: a call that compiled is not a latency and fails ``check``'s
``no_compilation``), TTFT and TPOT; then the device's name and the id phasetime gives NVML
and nvidia-smi (its UUID, under any ``CUDA_VISIBLE_DEVICES``).

    python benchmarks/compiled.py [--model llava-1.4b-random] [--backend inductor] [--calls 6]
    python benchmarks/compiled.py --model tiny-llava --backend eager --calls 3   # a dry run on CPU
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from transformers import CompileConfig  # noqa: E402

import phasetime  # noqa: E402
from phasetime.experiments import models  # noqa: E402
from phasetime.experiments.data.inputs import build_inputs, synthetic_image  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="llava-1.4b-random")
    parser.add_argument("--backend", default="inductor")
    parser.add_argument("--calls", type=int, default=6)
    parser.add_argument("--tokens", type=int, default=32)
    args = parser.parse_args()
    model, processor = models.load(args.model)
    device = next(model.parameters()).device
    images = [synthetic_image(336)] if models.is_vision_language(processor) else []
    inputs = build_inputs(processor, "Describe the image.", images, device=device)
    config = CompileConfig(backend=args.backend, fullgraph=False)
    config._compile_all_devices = True  # transformers compiles on CUDA only unless told
    kwargs = dict(max_new_tokens=args.tokens, min_new_tokens=args.tokens, cache_implementation="static",
                  compile_config=config)
    print(f"{args.model} on {device}, static cache, torch.compile backend {args.backend}")
    print(f"{'call':>4} {'compiles':>8} {'ttft ms':>9} {'tpot ms':>9} {'vision ms':>10}")
    for i in range(args.calls):
        m = phasetime.measure(model, inputs, **kwargs)
        print(f"{i:>4} {m.compiles:>8} {m.ttft_ms or 0:>9.3f} {m.tpot_ms or 0:>9.3f} {m.vision_ms:>10.3f}")
    if device.type == "cuda":
        from phasetime.sensors.gpu_id import physical_id

        index = device.index if device.index is not None else torch.cuda.current_device()
        print(f"cuda:{index} = {torch.cuda.get_device_name(index)}; NVML / nvidia-smi id {physical_id(index)} "
              f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r})")


if __name__ == "__main__":
    main()
