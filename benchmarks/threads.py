"""Which torch thread count gives stable numbers on CPU? The measurement behind ``threads: auto``.

For each thread count (1, 2, ... up to the logical CPUs, and torch's own default) the script
times tiny-llava calls (N = 16, interleaved across settings so drift hits all alike), once on
an idle machine and once with ``--busy`` processes spinning on every core, as on a shared
machine. It reports, per setting and condition, the median total and TPOT, the CV of each
(what ``phasetime check``'s stability check judges) and the median / fastest spread.

    python benchmarks/threads.py                     # idle, then loaded
    python benchmarks/threads.py --repeats 40 --json threads.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

import phasetime  # noqa: E402
from phasetime.analysis.stats import cv, median  # noqa: E402
from phasetime.experiments import models  # noqa: E402
from phasetime.experiments.data.inputs import build_inputs, synthetic_image  # noqa: E402


def _spin(stop: float) -> None:
    while time.monotonic() < stop:
        pass


def measure(settings: list[int], repeats: int, n: int) -> dict[int, dict[str, float | None]]:
    model, processor = models.load("tiny-llava", device="cpu", dtype="float32")
    inputs = build_inputs(processor, "Describe this image.", [synthetic_image(64)])
    totals: dict[int, list[float]] = {k: [] for k in settings}
    tpots: dict[int, list[float]] = {k: [] for k in settings}
    for k in settings:  # warm-up
        torch.set_num_threads(k)
        phasetime.measure(model, inputs, max_new_tokens=n, min_new_tokens=n)
    for _ in range(repeats):
        for k in settings:
            torch.set_num_threads(k)
            m = phasetime.measure(model, inputs, max_new_tokens=n, min_new_tokens=n)
            totals[k].append(m.total_ms)
            tpots[k].append(m.tpot_ms or 0.0)
    out = {}
    for k in settings:
        out[k] = {"total_ms": median(totals[k]), "tpot_ms": median(tpots[k]), "total_cv": cv(totals[k]),
                  "tpot_cv": cv(tpots[k]), "spread": median(totals[k]) / min(totals[k]) - 1}
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=25)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--busy", type=int, default=os.cpu_count() or 2, help="busy processes in the loaded condition")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    default = torch.get_num_threads()
    settings = sorted({1, 2, default, os.cpu_count() or 1})
    result: dict = {"cpu": os.cpu_count(), "torch_default_threads": default, "torch": torch.__version__,
                    "repeats": args.repeats, "tokens": args.tokens, "conditions": {}}
    result["conditions"]["idle"] = measure(settings, args.repeats, args.tokens)
    stop = time.monotonic() + 3600
    busy = [multiprocessing.Process(target=_spin, args=(stop,), daemon=True) for _ in range(args.busy)]
    for p in busy:
        p.start()
    try:
        result["conditions"][f"{args.busy} busy processes"] = measure(settings, args.repeats, args.tokens)
    finally:
        for p in busy:
            p.terminate()
    print(f"tiny-llava, N = {args.tokens}, {args.repeats} interleaved calls per setting; {os.cpu_count()} logical CPUs, "
          f"torch default {default} threads")
    print("| condition | threads | total ms | CV total | TPOT ms | CV TPOT | median/fastest - 1 |")
    print("|---|---|---|---|---|---|---|")
    for condition, rows in result["conditions"].items():
        for k, r in rows.items():
            print(f"| {condition} | {k} | {r['total_ms']:.2f} | {100 * (r['total_cv'] or 0):.1f}% | {r['tpot_ms']:.3f} "
                  f"| {100 * (r['tpot_cv'] or 0):.1f}% | {100 * r['spread']:.1f}% |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
