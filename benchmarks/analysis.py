"""check, compare and report on a results directory of 1,000,000 rows (target: < 5 s each, report < 10 MB).

The rows are synthetic but shaped like a real run made with ``--method both``: 100 cells
(2 methods x 10 output lengths x 5 image sizes), 10,000 rows each, every list column
(ITL gaps, ready times, decode forwards, spans) filled. Run B is run A with decode 3%
slower, for ``compare A B`` and ``report A B``. Each command is timed as the CLI runs it:
reading the directory included; the two reports run the real command in a fresh process
(Python start and imports included) and their file sizes are printed.

    python benchmarks/analysis.py [--rows 1000000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402

from phasetime.analysis.checks import run_checks  # noqa: E402
from phasetime.analysis.compare import compare_methods, compare_runs  # noqa: E402
from phasetime.results import read as read_results  # noqa: E402
from phasetime.results import verify  # noqa: E402
from phasetime.cli.analyze import SUMMARY_ONLY  # noqa: E402
from phasetime.results.content import CALL_ID_STRIDE, fingerprint  # noqa: E402
from phasetime.results.reader import BULK_COLUMNS  # noqa: E402
from phasetime.results.files import MEASUREMENTS_FILE, RUN_FILE, cell_files, read_json, write_json, write_table  # noqa: E402
from phasetime.results.schema import SCHEMA_VERSION  # noqa: E402


def read_run(path: Path) -> dict:
    return read_json(path / RUN_FILE)

LENGTHS = (2, 4, 8, 12, 16, 24, 32, 48, 64, 128)
SIZES = (112, 224, 336, 448, 672)


def synthetic_run(rows: int, decode_scale: float, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    cells = np.arange(rows) * 100 // rows  # 100 cells of equal size
    method = np.where(cells % 2 == 0, "direct", "subtract")
    n = np.array(LENGTHS)[(cells // 2) % 10]
    size = np.array(SIZES)[cells // 20]
    vision = 0.01 * size * rng.lognormal(0, 0.03, rows)
    prefill = 2.0 + 0.005 * size * rng.lognormal(0, 0.03, rows)
    step = 1.2 * decode_scale * rng.lognormal(0, 0.05, rows)
    decode = step * (n - 1)
    other = rng.uniform(0.3, 0.6, rows)
    ttft = vision + prefill + other
    total = ttft + decode
    tpot = np.where(method == "direct", step, decode / n)
    # List columns: offsets into one flat buffer per column (fast to build for a million rows).
    offsets = np.concatenate([[0], np.cumsum(n - 1)]).astype(np.int32)
    itl = np.repeat(step, n - 1) * rng.lognormal(0, 0.02, int(offsets[-1]))
    ready_offsets = np.concatenate([[0], np.cumsum(n)]).astype(np.int32)
    ready = np.repeat(ttft, n) + (np.arange(int(ready_offsets[-1])) - np.repeat(ready_offsets[:-1], n)) * np.repeat(step, n)
    spans_struct = pa.StructArray.from_arrays(
        [pa.array(["vision", "prefill"] * rows), pa.array(np.column_stack([other / 2, other / 2 + vision]).ravel()),
         pa.array(np.column_stack([other / 2 + vision, other / 2 + vision + prefill]).ravel())],
        names=["name", "start_ms", "end_ms"],
    )
    columns = {
        "call_id": cells * CALL_ID_STRIDE + (np.arange(rows) - np.searchsorted(cells, cells)), "repeat": np.zeros(rows, np.int32), "method": method, "timer": ["cuda-event"] * rows,
        "sequence": np.zeros(rows, np.int32), "call_sequences": np.ones(rows, np.int32),
        "prompt_tokens": (40 + size // 14).astype(np.int32), "output_tokens": n.astype(np.int32),
        "total_ms": total, "vision_ms": vision, "prefill_ms": prefill,
        "ttft_ms": pa.array(ttft, mask=method == "subtract"), "decode_ms": decode, "call_decode_ms": decode,
        "other_ms": other, "decode_steps": (n - 1).astype(np.int32),
        "tpot_ms": tpot,
        "itl_ms": pa.ListArray.from_arrays(pa.array(offsets), pa.array(itl)),
        "ready_ms": pa.ListArray.from_arrays(pa.array(ready_offsets), pa.array(ready)),
        "decode_forward_ms": pa.ListArray.from_arrays(pa.array(offsets), pa.array(itl * 0.9)),
        "spans": pa.ListArray.from_arrays(pa.array(np.arange(0, 2 * rows + 1, 2, dtype=np.int32)), spans_struct),
        "prefill_forwards": np.ones(rows, np.int32), "vision_calls": np.ones(rows, np.int32),
        "model": ["llava-1.4b-random"] * rows, "dtype": ["bfloat16"] * rows, "image_size": size,
        "batch_size": np.ones(rows, np.int64), "generation": ["{}"] * rows, "max_new_tokens": n, "cell": cells,
    }
    table = pa.table(columns)
    return table.replace_schema_metadata({b"phasetime.schema": str(SCHEMA_VERSION).encode()})


def write_run(path: Path, table: pa.Table) -> None:
    path.mkdir(parents=True)
    write_table(path / MEASUREMENTS_FILE, table)
    write_json(path / RUN_FILE, {"schema_version": SCHEMA_VERSION, "experiment": {"warmup": 2, "repeats": 10000},
                                 "environment": {"device": "cuda"}})
    # Markers as a run writes them: row count, the cell's parameters and the rows' fingerprint,
    # so that reading verifies the content of every cell.
    params = ["model", "method", "dtype", "image_size", "batch_size", "generation", "max_new_tokens"]
    cells = table.select(["cell", *params]).group_by(["cell", *params]).aggregate([])
    for row in cells.to_pylist():
        cell = row.pop("cell")
        rows = table.filter(pc.equal(table.column("cell"), cell))
        marker = cell_files(path, cell)[1]
        marker.parent.mkdir(parents=True, exist_ok=True)
        write_json(marker, {"status": "done", "cell": cell, "rows": rows.num_rows, "params": row,
                            "sums": fingerprint(rows)})


def timed(label: str, fn) -> float:
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    print(f"{label:<28} {seconds:6.2f} s")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        a, b = Path(tmp) / "a", Path(tmp) / "b"
        write_run(a, synthetic_run(args.rows, 1.0, 0))
        write_run(b, synthetic_run(args.rows, 1.03, 1))
        print(f"{args.rows:,} rows per run, 100 cells")
        timed("verify (content checks)", lambda: verify(a))
        timed("read (verify + load)", lambda: read_results(a))
        # as the CLI reads: check and compare --methods with the ITL gaps (the length verdict
        # judges position by position) but not the other per-step lists, compare A B without any
        timed("check", lambda: run_checks(read_results(a, exclude=BULK_COLUMNS), read_run(a), legacy=True))
        timed("compare --methods", lambda: compare_methods(read_results(a, exclude=BULK_COLUMNS)))
        timed("compare A B", lambda: compare_runs(read_results(a, exclude=SUMMARY_ONLY),
                                                  read_results(b, exclude=SUMMARY_ONLY)))
        for label, args_ in (("check (CLI)", ["check", str(a)]), ("compare A B (CLI)", ["compare", str(a), str(b)])):
            timed(label, lambda: subprocess.run([sys.executable, "-m", "phasetime", *args_], capture_output=True))
        for label, args_ in (("report", [a]), ("report A B", [a, b])):
            page = Path(tmp) / "page.html"
            timed(label + " (CLI)", lambda: subprocess.run([sys.executable, "-m", "phasetime", "report", *map(str, args_),
                                                           "-o", str(page)], check=True, capture_output=True))
            print(f"{'  file size':<28} {page.stat().st_size / 2**20:6.2f} MiB")


if __name__ == "__main__":
    main()
