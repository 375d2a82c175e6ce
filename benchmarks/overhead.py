"""Does timing perturb what it measures? Instrumented vs plain generate(), interleaved.

For every repeat and output length N, the script runs one plain ``model.generate()`` and
one under a :class:`phasetime.Probe` (attached and detached around the call, as
``phasetime.measure`` does), alternating which goes first, and times both from outside
with the same clock (CUDA events or perf_counter, one sync before and after). It reports:

* overhead in the window: median(instrumented ``total_ms``, i.e. what the probe reports for
  the call) / median(plain wall time) - 1, per N: how much the hooks inflate what is
  measured. This is the figure the targets apply to;
* overhead of the whole call: the same with the instrumented wall time, which adds the
  work outside the measured window (attaching, mode checks, deriving the phases);
* coverage: (vision + prefill + decode) / total, the share of the call the phases explain;
* bias: Spearman rho between tpot and N over all instrumented calls (|rho| <= 0.1 wanted),
  next to the rho of the legacy denominator decode / N.

Targets (issue "phasetime core"): overhead <= 1% on CUDA at N = 128 and <= 3% on CPU;
coverage >= 95% on CUDA; |rho| <= 0.1. Defaults: on CUDA the ~1.4B random-weight LLaVA
(CLIP ViT-L/14-336 + 22-layer 2048-wide Llama) in bf16; on CPU tiny-llava.

    python benchmarks/overhead.py                  # defaults for the device found
    python benchmarks/overhead.py --json out.json  # also write the figures
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import phasetime  # noqa: E402
from phasetime.core.clock import clock_for, time_call  # noqa: E402
from phasetime.analysis.stats import median, spearman  # noqa: E402
from phasetime.experiments import models  # noqa: E402
from phasetime.experiments.data.inputs import build_inputs, synthetic_image  # noqa: E402


def self_accounted(model, inputs, n: int, repeats: int, device) -> dict:
    """The host time the probe spends in its own hooks (``probe_ms``), per call and per forward,
    with no sensor and with each sensor (energy only on CUDA, where NVML exists)."""
    from phasetime.sensors.memory import MemorySensor

    variants = {"none": lambda: [], "memory": lambda: [MemorySensor(model)]}
    if device.type == "cuda":
        try:
            from phasetime.sensors.energy import EnergySensor

            EnergySensor(device)
            variants["energy"] = lambda: [EnergySensor(device, interval_ms=0.0)]
        except Exception as exc:  # no NVML bindings here
            print(f"(energy sensor not measured: {exc})")
    out = {}
    for name, sensors in variants.items():
        runs = [phasetime.measure(model, inputs, sensors=sensors(), max_new_tokens=n, min_new_tokens=n)
                for _ in range(max(repeats, 5))]
        probe = median([m.probe_ms for m in runs])
        out[name] = {"probe_ms": probe, "us_per_forward": 1000 * probe / (n - 1 + 1),
                     "share_pct": 100 * probe / median([m.total_ms for m in runs])}
    return out


def main(argv: list[str] | None = None) -> dict:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="llava-1.4b-random" if cuda else "tiny-llava")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--lengths", default="2,4,8,16,32,64,128" if cuda else "2,4,8,16,32,64")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=336)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads on CPU (default 1, as phasetime run uses; see docs/experiments.md)")
    parser.add_argument("--json", default=None, help="write the figures here")
    args = parser.parse_args(argv)
    if not cuda:
        torch.set_num_threads(args.threads or 1)
    lengths = [int(x) for x in args.lengths.split(",")]

    model, processor = models.load(args.model, device=args.device, dtype=args.dtype)
    device = next(model.parameters()).device
    clock = clock_for(device)
    images = [synthetic_image(args.image_size)] if models.is_vision_language(processor) else []
    inputs = build_inputs(processor, "Describe this image in detail.", images, device=device)

    def plain(n):
        return lambda: model.generate(**inputs, max_new_tokens=n, min_new_tokens=n)

    measurements: list[phasetime.Measurement] = []

    def instrumented(n):
        def call():
            with phasetime.Probe(model) as probe:
                model.generate(**inputs, max_new_tokens=n, min_new_tokens=n)
            measurements.append(probe.measurements[-1])

        return call

    for n in lengths:  # warm-up: compile caches, allocator, clocks
        for _ in range(args.warmup):
            plain(n)()
            instrumented(n)()
    measurements.clear()

    walls: dict[int, dict[str, list[float]]] = {n: {"plain": [], "probe": [], "window": []} for n in lengths}
    for r in range(args.repeats):
        for n in lengths:
            order = [("plain", plain(n)), ("probe", instrumented(n))]
            if r % 2:
                order.reverse()
            for name, fn in order:
                walls[n][name].append(time_call(clock, fn)[0])
            walls[n]["window"].append(measurements[-1].total_ms)

    per_length = {}
    for n in lengths:
        mp, mi, mw = median(walls[n]["plain"]), median(walls[n]["probe"]), median(walls[n]["window"])
        per_length[n] = {
            "plain_ms": mp,
            "measured_total_ms": mw,
            "instrumented_wall_ms": mi,
            "window_overhead_pct": 100 * (mw / mp - 1),
            "call_overhead_pct": 100 * (mi / mp - 1),
        }
    coverage = [(m.vision_ms + m.prefill_ms + m.decode_ms) / m.total_ms for m in measurements]
    ns = [float(m.output_tokens) for m in measurements]
    result = {
        "model": args.model,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "timer": clock.name,
        "dtype": str(next(model.parameters()).dtype),
        "torch": torch.__version__,
        "repeats": args.repeats,
        "torch_threads": torch.get_num_threads(),
        "per_length": per_length,
        "coverage_median_pct": 100 * median(coverage),
        "coverage_min_pct": 100 * min(coverage),
        "spearman_tpot_vs_n": spearman([m.tpot_ms for m in measurements], ns),
        "spearman_legacy_decode_over_n_vs_n": spearman([m.decode_ms / m.output_tokens for m in measurements], ns),
    }
    print(f"{result['model']} on {result['device']} ({result['timer']}, {result['dtype']}), {args.repeats} repeats, "
          f"{result['torch_threads']} torch thread(s)")
    print("| N | plain ms | measured total_ms | overhead in window | instrumented wall ms | overhead of call |")
    print("|---|---|---|---|---|---|")
    for n, row in per_length.items():
        print(
            f"| {n} | {row['plain_ms']:.2f} | {row['measured_total_ms']:.2f} | {row['window_overhead_pct']:+.2f}% "
            f"| {row['instrumented_wall_ms']:.2f} | {row['call_overhead_pct']:+.2f}% |"
        )
    print(f"coverage (vision+prefill+decode)/total: median {result['coverage_median_pct']:.2f}%, "
          f"min {result['coverage_min_pct']:.2f}%")
    print(f"Spearman rho(tpot, N) = {result['spearman_tpot_vs_n']:+.3f}; "
          f"legacy rho(decode/N, N) = {result['spearman_legacy_decode_over_n_vs_n']:+.3f}")
    result["self_accounted"] = self_accounted(model, inputs, max(lengths), args.repeats, device)
    print(f"probe's own host time (probe_ms, self-accounted), N = {max(lengths)}:")
    print("| sensors | probe ms per call | probe us per forward | share of total_ms |")
    print("|---|---|---|---|")
    for name, row in result["self_accounted"].items():
        print(f"| {name} | {row['probe_ms']:.3f} | {row['us_per_forward']:.1f} | {row['share_pct']:.3f}% |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
