"""How often is the length verdict pass, fail or inconclusive, on tables of known truth?

A grid over what a run can look like (``phasetime.analysis.calibration`` builds each table):

- cell noise (the machine's moment a cell ran in, lognormal sd): 0.5, 1, 2, 4%;
- effect size: 0, 5, 10, 20%;
- shape: flat, warm-up in the first steps, context growth, every call at its own speed
  (physical: never the method's fault), last-gap work, decode / N (artifacts);
- cells (output lengths): 3 (2, 8, 32), 4 (2, 8, 16, 32), 8 (2, 3, 4, 6, 8, 16, 24, 32);

4 calls per cell, 1% call noise, 2% per-gap noise (``--gap-noise``: the direct method's
contrast cancels the cell's moment, so what it sees is the noise of single gaps; this VM's real
runs look like 5-10%). Printed per grid point: the share of seeds judged pass / fail /
inconclusive and the mean reported effect; then the issue's four targets checked over the
grid. The tables in docs/benchmarks.md come from here.

    python benchmarks/length_truth.py [--seeds 200] [--gap-noise 0.02] [--markdown]
"""

from __future__ import annotations

import argparse
import itertools
import time
import zlib

import numpy as np

from phasetime.analysis.calibration import ARTIFACTS, PHYSICAL, SHAPES, synthetic_run
from phasetime.analysis.length import judge_configs

NOISES = (0.005, 0.01, 0.02, 0.04)
EFFECTS = (0.0, 0.05, 0.10, 0.20)
LENGTHS = {3: (2, 8, 32), 4: (2, 8, 16, 32), 8: (2, 3, 4, 6, 8, 16, 24, 32)}


def rates(shape: str, effect: float, noise: float, cells: int, seeds: int, gap_noise: float) -> dict[str, float]:
    rng = np.random.default_rng(zlib.crc32(repr((shape, effect, noise, cells)).encode()))
    found = [judge_configs(synthetic_run(rng, LENGTHS[cells], shape, effect, noise, gap_noise=gap_noise))[0]
             for _ in range(seeds)]
    out = {v: sum(j.verdict == v for j in found) / seeds for v in ("pass", "fail", "inconclusive")}
    effects = [j.effect for j in found if j.effect is not None]
    out["effect"] = float(np.mean(effects)) if effects else float("nan")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument("--gap-noise", type=float, default=0.02, help="lognormal sd of each gap (default 0.02)")
    parser.add_argument("--markdown", action="store_true", help="print the grid as a Markdown table")
    args = parser.parse_args()
    start = time.perf_counter()
    grid = {}
    for shape, effect, noise, cells in itertools.product(SHAPES, EFFECTS, NOISES, LENGTHS):
        if shape == "flat" and effect:
            continue  # flat has no size
        grid[shape, effect, noise, cells] = rates(shape, effect, noise, cells, args.seeds, args.gap_noise)
    if args.markdown:
        print("| shape | effect | cell noise | cells | pass | fail | inconclusive | mean effect |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for (shape, effect, noise, cells), r in grid.items():
        row = (shape, f"{100 * effect:g}%", f"{100 * noise:g}%", str(cells), f"{100 * r['pass']:.0f}%",
               f"{100 * r['fail']:.0f}%", f"{100 * r['inconclusive']:.0f}%", f"{100 * r['effect']:+.1f}%")
        print(("| " + " | ".join(row) + " |") if args.markdown else "  ".join(f"{v:>12}" for v in row))

    def worst(cond, key: str) -> tuple[float, tuple]:
        found = [(r[key], k) for k, r in grid.items() if cond(*k)]
        return max(found) if key != "fail_min" else min(found)

    no_artifact = worst(lambda s, e, n, c: s in PHYSICAL or e == 0, "fail")
    strong = [(r["fail"], k) for k, r in grid.items() if k[0] == "last-gap" and k[1] == 0.10 and k[2] == 0.01]
    artifact_pass = worst(lambda s, e, n, c: s in ARTIFACTS and e > 0, "pass")
    physical = worst(lambda s, e, n, c: s in PHYSICAL and s != "flat", "fail")
    print(f"\nno artifact: fail at most {100 * no_artifact[0]:.1f}% (target 5%; worst at {no_artifact[1]})")
    for fail, k in strong:
        print(f"last-gap 10% at 1% noise, {k[3]} cells: fails {100 * fail:.0f}% (target >= 90%)")
    print(f"an artifact is a pass at most {100 * artifact_pass[0]:.1f}% (target 10%; worst at {artifact_pass[1]})")
    print(f"a physical profile fails the method at most {100 * physical[0]:.1f}% (target 5%; worst at {physical[1]})")
    print(f"({args.seeds} seeds per point, {time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
