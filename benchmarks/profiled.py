"""What ``profile=True`` costs (issue 28): plain calls against profiled calls of one model, paired.

Per output length, ``--pairs`` pairs of calls, each a plain ``measure()`` then a profiled one,
in alternating order: the profiled call's slowdown inside the call (its ``total_ms`` against
the plain call's, and per phase), and the profiler's own work outside the call (start, stop,
reading and attributing its events: ``CallProfile.profiler_ms``), with the events per call,
how well the two clock anchors agree and what share of each phase the operators cover. Then
the top three operators of each phase of the last profiled call. On a GPU it adds the
kernels' busy time against each phase's wall time.

    python benchmarks/profiled.py --model tiny-llava --lengths 8,32 --pairs 10
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import phasetime  # noqa: E402
from phasetime.experiments import models  # noqa: E402
from phasetime.experiments.data.inputs import build_inputs, synthetic_image  # noqa: E402

PHASES = ("vision", "prefill", "decode", "other")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny-llava")
    ap.add_argument("--lengths", default="8,32")
    ap.add_argument("--pairs", type=int, default=10)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--threads", type=int, default=1, help="torch threads on a CPU (phasetime run's default: 1)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    model, processor = models.load(args.model, device=args.device, dtype=args.dtype)
    images = [synthetic_image(336 if "1.4b" in args.model else 64)] if models.is_vision_language(processor) else []
    inputs = build_inputs(processor, "Describe this image.", images, device=next(model.parameters()).device)
    print(f"{args.model} on {next(model.parameters()).device}, {torch.get_num_threads()} thread(s), "
          f"{args.pairs} pairs per length")
    print("| N | plain total ms | profiled total ms | slowdown in the call | profiler's own ms (outside) | events "
          "| anchors agree, us | operators' self time / phase: vision, prefill, decode, other |")
    print("|---|---|---|---|---|---|---|---|")
    last = None
    for n in [int(x) for x in args.lengths.split(",")]:
        kw = dict(max_new_tokens=n, min_new_tokens=n, do_sample=False)
        phasetime.measure(model, inputs, **kw)
        phasetime.measure(model, inputs, profile=True, **kw)  # warm both
        plain, prof, own, events, align, cover = [], [], [], [], [], {p: [] for p in PHASES}
        for i in range(args.pairs):
            order = (False, True) if i % 2 == 0 else (True, False)
            for profiled in order:
                m = phasetime.measure(model, inputs, profile=profiled, **kw)
                if not profiled:
                    plain.append(m.total_ms)
                    continue
                p = m.profile
                prof.append(m.total_ms)
                own.append(p.profiler_ms)
                events.append(p.events)
                align.append(p.alignment_us or 0.0)
                for phase in PHASES:
                    if p.phase_ms(phase) > 0:
                        cover[phase].append(sum(p.self_ms(phase).values()) / p.phase_ms(phase))
                last = m
        med = statistics.median
        covered = ", ".join(f"{100 * med(cover[p]):.0f}%" if cover[p] else "-" for p in PHASES)
        print(f"| {n} | {med(plain):.2f} | {med(prof):.2f} | {100 * (med(prof) / med(plain) - 1):+.0f}% | "
              f"{med(own):.1f} | {int(med(events))} | {med(align):.1f} (max {max(align):.1f}) | {covered} |")
    assert last is not None and last.profile is not None
    p = last.profile
    print("\nTop operators by self time in the last profiled call (share of the phase):")
    for phase in PHASES:
        if p.phase_ms(phase) > 0:
            tops = "; ".join(f"{name} {100 * share:.0f}%" for name, _, share in p.top(phase, 3))
            gap = 100 * p.uncovered_ms(phase) / p.phase_ms(phase)
            line = f"- {phase} ({p.phase_ms(phase):.2f} ms): {tops}; no operator {gap:.0f}%"
            if p.device is not None:
                busy = p.phase_ms(phase, "kernel") - p.uncovered_ms(phase, "kernel")
                line += f"; kernels busy {busy:.2f} of {p.phase_ms(phase, 'kernel'):.2f} ms on the device"
            print(line)


if __name__ == "__main__":
    main()
