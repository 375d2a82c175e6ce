"""The runner's own cost per measured call, and how fast a large results directory reads back.

1. Runner cost: an experiment on tiny-llama (1 output token, so generate() is short) with
   many repeats. Per measured call, the wall time between consecutive calls minus the
   ``total_ms`` of the call (the timed generate() window) is everything the runner adds:
   preprocessing, attaching the probe, deriving phases, decoding, scoring, building rows.
   Reported with and without ``preprocess_ms`` (the processor's own time, recorded per
   row, which serving engines count inside TTFT). Target: < 2 ms without preprocessing.
2. Reading: 1,000,000 measurement rows (copies of real rows, list columns included) as
   one ``measurements.parquet`` and as 100 unmerged cell parts; ``read_results`` on each.
   Target: < 5 s.

    python benchmarks/runner.py [--calls 300] [--rows 1000000]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

from phasetime.experiments.running.run import run_experiment  # noqa: E402
from phasetime.experiments.plan.spec import parse_experiment  # noqa: E402
from phasetime.results import read as read_results  # noqa: E402
from phasetime.results.files import MEASUREMENTS_FILE, RUN_FILE, cell_files, read_json, write_json, write_table  # noqa: E402


def runner_cost(calls: int, workdir: Path) -> dict:
    exp = parse_experiment({
        "name": "cost", "models": ["tiny-llama"], "inputs": {"kind": "synthetic", "prompt": "hi"},
        "sweep": {"max_new_tokens": [1]}, "repeats": calls, "warmup": 5,
    })
    stamps: list[int] = []

    def progress(event: str, info: dict) -> None:
        if event == "call" and not info["warmup"]:
            stamps.append(time.perf_counter_ns())

    run_experiment(exp, workdir / "cost", progress=progress)
    table = read_results(workdir / "cost").sort_by("call_id")
    total = np.asarray(table.column("total_ms").to_numpy(), dtype=float)
    pre = np.asarray(table.column("preprocess_ms").to_numpy(), dtype=float)
    wall = np.diff(np.asarray(stamps, dtype=float)) / 1e6  # call i (i >= 1): from the end of call i - 1
    own = wall - total[1:]
    return {
        "calls": calls,
        "median_call_wall_ms": float(np.median(wall)),
        "median_generate_ms": float(np.median(total)),
        "median_runner_cost_ms": float(np.median(own - pre[1:])),
        "median_runner_cost_with_preprocess_ms": float(np.median(own)),
        "median_preprocess_ms": float(np.median(pre)),
    }


def read_speed(rows: int, workdir: Path) -> dict:
    seed = read_results(workdir / "cost")
    reps = -(-rows // seed.num_rows)
    big = pa.concat_tables([seed] * reps).slice(0, rows)
    big = big.set_column(big.column_names.index("cell"), "cell", pa.array(np.arange(rows) // (rows // 100), pa.int64()))
    run = read_json(workdir / "cost" / RUN_FILE)
    run.pop("cell_keys", None)
    merged, parts = workdir / "merged", workdir / "parts"
    step = rows // 100
    for directory in (merged, parts):
        (directory / "cells").mkdir(parents=True)
        write_json(directory / RUN_FILE, run)
        for i in range(100):
            part, marker = cell_files(directory, i)
            if directory is parts:
                write_table(part, big.slice(i * step, step))
            write_json(marker, {"status": "done", "cell": i, "rows": step})
    write_table(merged / MEASUREMENTS_FILE, big)
    out = {"rows": rows}
    for name, path in (("merged", merged), ("parts", parts)):
        start = time.perf_counter()
        table = read_results(path)
        out[f"read_{name}_s"] = time.perf_counter() - start
        assert table.num_rows == rows
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cost = runner_cost(args.calls, Path(tmp))
        print(f"runner: {cost['calls']} calls of tiny-llama, N = 1")
        print(f"  median wall per call          {cost['median_call_wall_ms']:.3f} ms")
        print(f"  median generate() (total_ms)  {cost['median_generate_ms']:.3f} ms")
        print(f"  median preprocess_ms          {cost['median_preprocess_ms']:.3f} ms")
        print(f"  runner's own cost per call    {cost['median_runner_cost_ms']:.3f} ms (target < 2 ms)")
        print(f"  ... with preprocessing        {cost['median_runner_cost_with_preprocess_ms']:.3f} ms")
        speed = read_speed(args.rows, Path(tmp))
        print(f"read_results on {speed['rows']:,} rows: merged file {speed['read_merged_s']:.2f} s, "
              f"100 cell parts {speed['read_parts_s']:.2f} s (target < 5 s)")


if __name__ == "__main__":
    main()
