"""Does timing perturb what it measures? ``measure()`` against a plain generate(), interleaved.

The headline (issue 25's target: at most 10 us per decode step): pairs of calls, alternating
which goes first, of a plain ``model.generate()`` carrying one forward pre-hook (the least any
per-step timing needs: it stamps each forward's start) and ``phasetime.measure()``. Each call
gives its mean gap between consecutive decode forwards' starts (the plain call from its
hook's stamps, measure() from its own ``itl_ms``, the last gap left out of both: it ends at the
return). The paired difference is what the probe adds per decode step; the median over the
pairs, with a 95% bootstrap interval, is printed beside what ``probe_ms`` says the probe spent
per step (its hooks' own time plus what they cannot time, calibrated: it should own the
difference).

Then, for every repeat and output length N, the script runs one plain ``model.generate()`` and
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
    python benchmarks/overhead.py --pairs 200 --lengths 32   # the per-step figure only, tighter
    python benchmarks/overhead.py --json out.json  # also write the figures
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

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


def per_step(model, inputs, n: int, pairs: int, warmup: int) -> dict:
    """What measure() adds per decode step over a plain generate() with one forward pre-hook
    (see the module docstring), and what probe_ms says it spent per step."""
    import numpy as np

    starts: list[int] = []

    def stamp(module, args):
        starts.append(time.perf_counter_ns())

    def plain() -> float:
        starts.clear()
        handle = model.register_forward_pre_hook(stamp)
        try:
            model.generate(**inputs, max_new_tokens=n, min_new_tokens=n)
        finally:
            handle.remove()
        gaps = np.diff(starts[1:]) / 1e3  # decode forward k to k + 1, us
        return float(gaps.mean())

    def probed() -> tuple[float, float]:
        m = phasetime.measure(model, inputs, max_new_tokens=n, min_new_tokens=n)
        forwards = m.prefill_forwards + m.decode_steps
        return 1e3 * sum(m.itl_ms[:-1]) / (n - 2), 1e3 * m.probe_ms / forwards

    for _ in range(warmup):
        plain()
        probed()
    diffs, owned = [], []
    for r in range(pairs):
        if r % 2:
            (b, own), a = probed(), plain()
        else:
            a, (b, own) = plain(), probed()
        diffs.append(b - a)
        owned.append(own)
    diffs_a = np.asarray(diffs)
    rng = np.random.default_rng(0)
    boot = np.median(rng.choice(diffs_a, size=(2000, len(diffs_a))), axis=1)
    low, high = np.percentile(boot, [2.5, 97.5])
    return {"n": n, "pairs": pairs, "added_us_per_step": float(np.median(diffs_a)), "ci95": [float(low), float(high)],
            "probe_us_per_forward": float(np.median(owned)), "diffs_us": [float(d) for d in diffs_a]}


def across_processes(argv: list[str], args: argparse.Namespace) -> dict:
    """The per-step figure measured in ``args.processes`` fresh processes, pooled."""
    import subprocess
    import tempfile

    import numpy as np

    runs = []
    keep = [a for a in argv if not a.startswith("--processes") and a != str(args.processes)]
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.processes):
            out = os.path.join(tmp, f"{i}.json")
            subprocess.run([sys.executable, __file__, *keep, "--only-steps", "--json", out], check=True)
            with open(out, encoding="utf-8") as fh:
                runs.append(json.load(fh)["per_step"])
    diffs = np.concatenate([r["diffs_us"] for r in runs])
    rng = np.random.default_rng(0)
    boot = np.median(rng.choice(diffs, size=(2000, len(diffs))), axis=1)
    pooled = {"processes": [round(r["added_us_per_step"], 2) for r in runs], "pairs": int(len(diffs)),
              "added_us_per_step": float(np.median(diffs)), "ci95": [float(np.percentile(boot, 2.5)),
                                                                        float(np.percentile(boot, 97.5))],
              "probe_us_per_forward": float(np.median([r["probe_us_per_forward"] for r in runs]))}
    print(f"pooled over {args.processes} processes ({pooled['pairs']} pairs): measure() adds "
          f"{pooled['added_us_per_step']:+.1f} us per decode step, 95% CI [{pooled['ci95'][0]:+.1f}, "
          f"{pooled['ci95'][1]:+.1f}]; per process {pooled['processes']}; probe_ms says "
          f"{pooled['probe_us_per_forward']:.1f} us per forward")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"model": args.model, "per_step": pooled}, fh, indent=2)
    return {"per_step": pooled}


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
    parser.add_argument("--pairs", type=int, default=100, help="paired calls for the per-step figure")
    parser.add_argument("--step-length", type=int, default=None, help="N of the per-step figure (default: 32 on CPU, 128 on CUDA)")
    parser.add_argument("--only-steps", action="store_true", help="the per-step figure only")
    parser.add_argument("--processes", type=int, default=1,
                        help="measure the per-step figure in this many fresh processes (where a process lands in "
                             "memory moves a per-step cost of a few us), then report the median over all pairs")
    args = parser.parse_args(argv)
    if args.processes > 1:
        return across_processes(argv or [], args)
    if not cuda:
        torch.set_num_threads(args.threads or 1)
    lengths = [int(x) for x in args.lengths.split(",")]

    model, processor = models.load(args.model, device=args.device, dtype=args.dtype)
    device = next(model.parameters()).device
    clock = clock_for(device)
    images = [synthetic_image(args.image_size)] if models.is_vision_language(processor) else []
    inputs = build_inputs(processor, "Describe this image in detail.", images, device=device)
    steps = per_step(model, inputs, args.step_length or (128 if cuda else 32), args.pairs, args.warmup)
    print(f"{args.model} on {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}, "
          f"{torch.get_num_threads()} torch thread(s): measure() adds {steps['added_us_per_step']:+.1f} us per decode "
          f"step over a plain generate() with one forward pre-hook (median of {steps['pairs']} paired calls at "
          f"N = {steps['n']}, 95% CI [{steps['ci95'][0]:+.1f}, {steps['ci95'][1]:+.1f}]); probe_ms says "
          f"{steps['probe_us_per_forward']:.1f} us per forward")
    if args.only_steps:
        if args.json:
            with open(args.json, "w", encoding="utf-8") as fh:
                json.dump({"model": args.model, "per_step": steps}, fh, indent=2)
        return {"per_step": steps}

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
        "per_step": steps,
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
