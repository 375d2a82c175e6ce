"""Memory, work and utilisation per phase, with the dynamic and the static KV cache.

For each cache implementation: warm-up calls, then ``--repeats`` measured calls carrying the
memory sensor (and the energy sensor where NVML's bindings exist); one replay under the FLOP
counter (outside the timed calls) for FLOPs per phase; the bytes each phase must move; the
device's roof (datasheet for a known GPU, else measured). Prints per phase: median ms, peak
memory, FLOPs, bytes, achieved FLOP/s and bytes/s, MFU and MBU, energy; and per decode step.
Uses only torch, transformers, numpy and Pillow (phasetime from src/ is enough), so it runs on
the GPU image as it is.

    python benchmarks/resources.py                             # the device found, its defaults
    python benchmarks/resources.py --model tiny-llava --tokens 16 --repeats 3    # a dry run on CPU
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import phasetime  # noqa: E402
from phasetime.hf.replay import count_flops  # noqa: E402
from phasetime.sensors.cost import bytes_moved, language_read_bytes  # noqa: E402
from phasetime.sensors.roof import roof  # noqa: E402
from phasetime.hf.parts import weight_bytes  # noqa: E402
from phasetime.sensors.memory import MemorySensor  # noqa: E402
from phasetime.analysis.stats import median  # noqa: E402
from phasetime.experiments import models  # noqa: E402
from phasetime.experiments.data.inputs import build_inputs, synthetic_image  # noqa: E402

PHASES = ("vision", "prefill", "decode")


def energy_sensor(device: torch.device) -> Any:
    if device.type != "cuda":
        return None
    try:
        from phasetime.sensors.energy import EnergySensor

        return EnergySensor(device)
    except Exception as exc:  # no NVML bindings on this machine
        print(f"(no energy: {exc})")
        return None


def one_cache(model: Any, inputs: dict, tokens: int, repeats: int, warmup: int, cache: str | None) -> dict:
    device = next(model.parameters()).device
    kwargs: dict[str, Any] = {"max_new_tokens": tokens, "min_new_tokens": tokens}
    if cache:
        kwargs["cache_implementation"] = cache
    weights = weight_bytes(model)
    for _ in range(warmup):  # compiles the static cache's forward, warms the allocator
        phasetime.measure(model, inputs, **kwargs)
    energy = energy_sensor(device)
    runs = []
    for _ in range(repeats):
        sensors = [MemorySensor(model, weights)] + ([energy] if energy else [])
        runs.append(phasetime.measure(model, inputs, sensors=sensors, **kwargs))
    replay = count_flops(model, inputs, kwargs, sensors=[MemorySensor(model, weights)])
    moved = bytes_moved(language_read_bytes(model, weights), weights, replay.resources.get("kv_prefill_bytes"),
                        replay.resources.get("kv_end_bytes"), replay.decode_steps, replay.vision_calls > 0)
    top = roof(device, str(next(model.parameters()).dtype).removeprefix("torch."))
    out: dict[str, Any] = {"cache": cache or "dynamic", "roof": top.to_dict(), "tpot_ms": median([m.tpot_ms or 0 for m in runs]),
                           "kv_end_bytes": replay.resources.get("kv_end_bytes"), "probe_ms": median([m.probe_ms or 0 for m in runs]),
                           "phases": {}}
    for p in PHASES:
        ms = median([getattr(m, f"{p}_ms") for m in runs])
        flops, nbytes = replay.resources.get(f"{p}_flops") or 0, moved[f"{p}_bytes"]
        seconds = ms / 1000 if ms > 0 else None
        fs, bs = (flops / seconds, nbytes / seconds) if seconds else (None, None)
        joules = [m.resources.get(f"energy_{p}_j") for m in runs if m.resources.get(f"energy_{p}_j") is not None]
        out["phases"][p] = {
            "ms": ms, "peak_bytes": median([m.resources.get(f"mem_{p}_peak_bytes") or 0 for m in runs]),
            "flops": flops, "bytes": nbytes, "flops_per_s": fs, "bytes_per_s": bs,
            "mfu": fs / top.flops_per_s if fs and top.flops_per_s else None,
            "mbu": bs / top.bytes_per_s if bs and top.bytes_per_s else None,
            "energy_j": median(joules) if joules else None,
        }
    per_token = [m.resources.get("energy_per_token_j") for m in runs if m.resources.get("energy_per_token_j") is not None]
    out["energy_per_token_j"] = median(per_token) if per_token else None
    out["energy_coarse"] = sorted({m.resources.get("energy_coarse") for m in runs if m.resources.get("energy_coarse")})
    return out


def show(result: dict) -> None:
    r = result["roof"]
    print(f"\n{result['cache']} cache: TPOT {result['tpot_ms']:.3f} ms, KV cache at the end "
          f"{(result['kv_end_bytes'] or 0) / 2**20:.1f} MiB, probe {result['probe_ms']:.3f} ms per call; roof "
          f"{r['flops_per_s'] / 1e12:.3g} TFLOP/s, {r['bytes_per_s'] / 1e9:.4g} GB/s ({r['source']})")
    print("| phase | ms | peak MiB | GFLOP | MB moved | TFLOP/s | GB/s | MFU | MBU | J |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for p, x in result["phases"].items():
        def f(v: Any, scale: float, fmt: str) -> str:
            return "-" if v is None else format(v / scale, fmt)
        print(f"| {p} | {x['ms']:.3f} | {f(x['peak_bytes'], 2**20, '.0f')} | {f(x['flops'], 1e9, '.4g')} | "
              f"{f(x['bytes'], 1e6, '.4g')} | {f(x['flops_per_s'], 1e12, '.3g')} | {f(x['bytes_per_s'], 1e9, '.4g')} | "
              f"{f(x['mfu'], 0.01, '.2f')}% | {f(x['mbu'], 0.01, '.2f')}% | {f(x['energy_j'], 1, '.3f')} |")
    if result["energy_per_token_j"] is not None:
        print(f"decode energy per output token: {result['energy_per_token_j']:.4f} J; coarse phases: "
              f"{', '.join(result['energy_coarse']) or 'none'}")


def main(argv: list[str] | None = None) -> list[dict]:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="llava-1.4b-random" if cuda else "tiny-llava")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--caches", default="dynamic,static")
    parser.add_argument("--image-size", type=int, default=336)
    parser.add_argument("--json", default=None, help="write the figures here")
    args = parser.parse_args(argv)
    if not cuda:
        torch.set_num_threads(1)
    model, processor = models.load(args.model, device=args.device, dtype=args.dtype)
    device = next(model.parameters()).device
    images = [synthetic_image(args.image_size)] if models.is_vision_language(processor) else []
    inputs = build_inputs(processor, "Describe this image in detail.", images, device=device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"{args.model} on {name}, {next(model.parameters()).dtype}, N = {args.tokens}, {args.repeats} repeats")
    results = []
    for cache in args.caches.split(","):
        try:
            result = one_cache(model, inputs, args.tokens, args.repeats, args.warmup, None if cache == "dynamic" else cache)
        except Exception as exc:  # a cache this model or version cannot use: say so, go on
            print(f"\n{cache} cache: failed: {type(exc).__name__}: {exc}")
            continue
        show(result)
        results.append(result)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"model": args.model, "device": name, "results": results}, fh, indent=2)
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
