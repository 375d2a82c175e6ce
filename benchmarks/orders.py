"""Back to back or interleaved: how much do a cell's repeats share the machine's moment?

Runs ``phasetime run --model tiny-llava --max-new-tokens 2,3,4,6,8,16,24,32 --repeats 4``
``--runs`` times with ``--order shuffled`` and as often with ``--order interleaved``
(alternating), optionally while two processes keep every core busy in random spells of
``--spells`` seconds on and off (a VM whose speed jumps), then ``phasetime check`` each. Prints
per order: the median half-width of the length verdict's interval, the effects, how many runs
``tpot_vs_length`` judges pass / fail / inconclusive, and how many fail ``stability``.

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

from phasetime.analysis.length import judge_configs
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


def judged(out: Path) -> tuple[float, float, str]:
    """(the interval's half-width, the effect, the verdict) of the run's length judgement."""
    j = judge_configs(read(out))[0]
    assert j.ci is not None and j.effect is not None
    return (j.ci[1] - j.ci[0]) / 2, j.effect, j.verdict


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
    found: dict[str, list[tuple[float, float, str, list[str]]]] = {"shuffled": [], "interleaved": []}
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
                    found[order].append((*judged(out), failing))
    finally:
        for p in load:
            p.terminate()
    print(f"{args.method}, {args.runs} runs per order, spells: {args.spells or 'none'}")
    for order, runs in found.items():
        half = np.median([r[0] for r in runs])
        effects = " ".join(f"{100 * r[1]:+.0f}" for r in runs)
        verdicts = {v: sum(r[2] == v for r in runs) for v in ("pass", "fail", "inconclusive")}
        stability = sum("stability" in r[3] for r in runs)
        print(f"{order:>11}: interval half-width {100 * half:.1f}%, tpot_vs_length {verdicts}, stability fails "
              f"{stability}; effects (%) {effects}")


if __name__ == "__main__":
    main()
