"""Back to back or interleaved: how much do a cell's repeats share the machine's moment?

Runs ``phasetime run --model tiny-llava --max-new-tokens 2,3,4,6,8,16,24,32 --repeats 4``
``--runs`` times with ``--order shuffled`` and as often with ``--order interleaved``
(alternating), optionally while two processes keep every core busy in random spells of
``--spells`` seconds on and off (a VM whose speed jumps), then ``phasetime check`` each. Prints
per order: the spread of the cell values around the length fit (as a share of their mean),
the median half-width of the length effect's 95% interval, the changes, how many runs fail
``tpot_vs_length`` and ``stability``.

    python benchmarks/orders.py [--runs 8] [--method direct] [--spells 0.1,0.5]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from phasetime.analysis.length import _design, length_effects
from phasetime.results import read

COMMAND = ["--model", "tiny-llava", "--max-new-tokens", "2,3,4,6,8,16,24,32", "--repeats", "4", "--quiet"]


def spin(seed: int, low: float, high: float) -> None:
    rng = random.Random(seed)
    while True:
        end = time.perf_counter() + rng.uniform(low, high)
        while time.perf_counter() < end:
            pass
        time.sleep(rng.uniform(low, high))


def phasetime(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "phasetime", *args], capture_output=True, text=True, env=env)


def spread(out: Path) -> tuple[float, float, float]:
    """(cell values' spread around the fit / mean, the interval's half-width, the change)."""
    effect = length_effects(read(out))[0]
    ns = np.array([v[0] for v in effect.values])
    ys = np.array([v[1] for v in effect.values])
    x = _design(ns, True)
    fit = x @ np.linalg.lstsq(x, ys, rcond=None)[0]
    sd = float(np.sqrt(((ys - fit) ** 2).sum() / (ys.size - x.shape[1])) / ys.mean())
    assert effect.ci is not None and effect.change is not None
    return sd, (effect.ci[1] - effect.ci[0]) / 2, effect.change


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--method", default="direct")
    parser.add_argument("--spells", default="", help="LOW,HIGH seconds of busy and idle spells (default: no load)")
    args = parser.parse_args()
    load = []
    if args.spells:
        low, high = (float(v) for v in args.spells.split(","))
        load = [mp.Process(target=spin, args=(i, low, high), daemon=True) for i in range(os.cpu_count() or 1)]
        for p in load:
            p.start()
    found: dict[str, list[tuple[float, float, float, list[str]]]] = {"shuffled": [], "interleaved": []}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(args.runs):
                for order in found:
                    out = Path(tmp) / f"{order}-{i}"
                    run = phasetime("run", *COMMAND, "--method", args.method, "--order", order, "--out", str(out))
                    if run.returncode != 0:
                        raise SystemExit(f"run failed: {run.stderr[-2000:]}")
                    phasetime("check", str(out), "-o", str(Path(tmp) / "check.json"))
                    checks = json.loads((Path(tmp) / "check.json").read_text())["checks"]
                    failing = sorted({c["check"] for c in checks if c["verdict"] == "fail"})
                    found[order].append((*spread(out), failing))
    finally:
        for p in load:
            p.terminate()
    print(f"{args.method}, {args.runs} runs per order, spells: {args.spells or 'none'}")
    for order, runs in found.items():
        sd = np.median([r[0] for r in runs])
        half = np.median([r[1] for r in runs])
        changes = " ".join(f"{100 * r[2]:+.0f}" for r in runs)
        length = sum("tpot_vs_length" in r[3] for r in runs)
        stability = sum("stability" in r[3] for r in runs)
        print(f"{order:>11}: cell spread {100 * sd:.1f}%, interval half-width {100 * half:.1f}%, "
              f"tpot_vs_length fails {length}, stability fails {stability}; changes (%) {changes}")


if __name__ == "__main__":
    main()
