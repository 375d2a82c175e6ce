"""How often does the length effect (``tpot_vs_length``) fail, on tables of known truth?

The tables have issue 16's shape: output lengths 2, 3, 4, 6, 8, 16, 24, 32, 4 calls per
cell, TPOT = truth(N) x a per-cell offset (normal, ``--cell-sd``) x a per-call noise (1%).
Printed per truth: the share of seeds that fail, the mean reported change and how often
the 95% interval covers the true change. The figures in docs/analysis.md come from here.

    python benchmarks/length_truth.py [--seeds 1000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pyarrow as pa

from phasetime.analysis.length import TOLERANCE, length_effects

LENGTHS = (2, 3, 4, 6, 8, 16, 24, 32)
REPEATS = 4


def table(rng: np.random.Generator, truth, cell_sd: float, speeds: tuple[float, ...] | None = None) -> pa.Table:
    """One synthetic run: a cell's offset is normal (``cell_sd``), or one of ``speeds`` at random."""
    n_col, tpot, calls = [], [], []
    for cell, n in enumerate(LENGTHS):
        offset = rng.choice(speeds) if speeds else rng.normal(1.0, cell_sd)
        for call in range(REPEATS):
            n_col.append(n)
            tpot.append(truth(n) * offset * rng.normal(1.0, 0.01))
            calls.append(cell * 1_000_000 + call)
    return pa.table({"call_id": calls, "max_new_tokens": n_col, "output_tokens": n_col, "tpot_ms": tpot})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=1000)
    args = parser.parse_args()

    def flat(n: float) -> float:
        return 2.0

    def legacy(n: float) -> float:
        return 2.0 * (n - 1) / n

    def trend(n: float) -> float:
        return 2.0 * (1 + 0.10 * (n - 2) / 30)

    cases = [
        ("no trend, 4% cell sd", flat, 0.04, None),
        ("no trend, cells at 1x or 1.5x", flat, 0.0, (1.0, 1.5)),
        ("legacy decode / N, 4% cell sd", legacy, 0.04, None),
        ("+10% from N=2 to N=32, 1% cell sd", trend, 0.01, None),
        ("+10% from N=2 to N=32, 2% cell sd", trend, 0.02, None),
        ("+10% from N=2 to N=32, 4% cell sd", trend, 0.04, None),
    ]
    print(f"{'truth':<36} {'true change':>11} {'fails':>7} {'fails, tol 0':>12} {'mean change':>11} {'CI covers':>9}")
    for name, truth, sd, speeds in cases:
        start = time.perf_counter()
        true = (truth(32) - truth(2)) / float(np.mean([truth(n) for n in LENGTHS]))
        rng = np.random.default_rng(0)
        effects = [length_effects(table(rng, truth, sd, speeds))[0] for _ in range(args.seeds)]
        fails = np.mean([e.fails(TOLERANCE) for e in effects])
        strict = np.mean([e.fails(0.0) for e in effects])
        changes = np.array([e.change for e in effects])
        covers = np.mean([e.ci[0] <= true <= e.ci[1] for e in effects])
        print(f"{name:<36} {100 * true:>+10.1f}% {100 * fails:>6.1f}% {100 * strict:>11.1f}% {100 * changes.mean():>+10.1f}%"
              f" {100 * covers:>8.1f}%  ({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
