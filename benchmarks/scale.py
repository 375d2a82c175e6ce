"""How well do cells spread over Ray workers? Throughput with k workers against k x one worker.

Every forward of the model sleeps a known time (``benchmarks/sleepy.py``), so a cell lasts a
known time without needing a core, and k workers fit on this 2-core machine. For k = 1, 2, 4
the same experiment (``--cells`` cells of ``--calls`` calls of N = 8 tokens: 8 forwards of
``--sleep-ms`` each per call) runs on a fresh local Ray cluster; the driver records when each
cell's outcome arrives. Steady-state throughput with k workers is (cells - k) / (time of the
last outcome - time of the k-th), which leaves out the workers' start (importing torch, building
the model). Efficiency = throughput(k) / (k x throughput(1)); goal >= 0.9 at k = 4.

The driver's own cost per cell is the time it spends persisting an outcome (rows, then marker,
each written and fsync'ed, and the stability warnings): median over all cells, as wall time
and as the driver thread's CPU time (wall time also counts the moments Ray's own processes,
sharing this machine's two cores, held the CPU); goal < 5 ms.

    python benchmarks/scale.py [--cells 24] [--sleep-ms 25] [--calls 2] [--json scale.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

import phasetime.experiments.running.run as driver  # noqa: E402
from phasetime.experiments.plan.spec import parse_experiment  # noqa: E402

HERE = Path(__file__).resolve().parent


def run(k: int, cells: int, calls: int, workdir: Path) -> dict:
    import ray

    os.environ["RAY_worker_niceness"] = "0"
    ray.init(num_cpus=max(k, 2), include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        exp = parse_experiment({
            "name": f"scale{k}", "models": [f"{HERE / 'sleepy.py'}:build"],
            "inputs": {"kind": "synthetic", "prompt": "hi"},
            "sweep": {"max_new_tokens": [8], "generation": [{"top_k": i} for i in range(1, cells + 1)]},
            "repeats": calls, "warmup": 0, "executor": {"kind": "ray", "workers": k, "cpus_per_worker": 1},
        })
        arrivals: list[float] = []
        persist: list[float] = []
        cpu: list[float] = []
        real = driver._persist

        def timed_persist(*args, **kwargs):  # the driver's own work per outcome
            start, start_cpu = time.perf_counter(), time.thread_time()
            real(*args, **kwargs)
            persist.append(time.perf_counter() - start)
            cpu.append(time.thread_time() - start_cpu)
            arrivals.append(time.perf_counter())

        driver._persist = timed_persist
        try:
            result = driver.run_experiment(exp, workdir / f"k{k}")
        finally:
            driver._persist = real
        assert result.done == cells and result.failed == 0, result
    finally:
        ray.shutdown()
    steady = (cells - k) / (arrivals[-1] - arrivals[k - 1])
    return {"workers": k, "cells": cells, "throughput_cells_per_s": steady,
            "driver_ms_per_cell_median": 1000 * float(np.median(persist)),
            "driver_cpu_ms_per_cell_median": 1000 * float(np.median(cpu)),
            "driver_ms_per_cell_max": 1000 * float(np.max(persist))}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=24)
    parser.add_argument("--calls", type=int, default=2)
    parser.add_argument("--sleep-ms", type=float, default=25.0)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    os.environ["PHASETIME_SLEEP_MS"] = str(args.sleep_ms)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in (int(x) for x in args.workers.split(",")):
            rows.append(run(k, args.cells, args.calls, Path(tmp)))
    base = rows[0]["throughput_cells_per_s"] / rows[0]["workers"]
    cell_s = args.calls * 8 * args.sleep_ms / 1000
    print(f"{args.cells} cells of {args.calls} calls x 8 forwards x {args.sleep_ms:g} ms sleep (~{cell_s:.2f} s a cell), "
          f"{os.cpu_count()} CPUs")
    print("| workers k | cells/s | efficiency thr(k) / (k x thr(1)) | driver wall ms per cell (median / max) "
          "| driver CPU ms per cell (median) |")
    print("|---|---|---|---|---|")
    for r in rows:
        r["efficiency"] = r["throughput_cells_per_s"] / (r["workers"] * base)
        print(f"| {r['workers']} | {r['throughput_cells_per_s']:.2f} | {r['efficiency']:.3f} | "
              f"{r['driver_ms_per_cell_median']:.2f} / {r['driver_ms_per_cell_max']:.2f} | "
              f"{r['driver_cpu_ms_per_cell_median']:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return {"rows": rows}


if __name__ == "__main__":
    main(sys.argv[1:])
