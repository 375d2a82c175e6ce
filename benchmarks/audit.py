"""Does ``phasetime check`` pass good runs and fail the legacy method? Real runs, back to back.

Runs ``phasetime run --model tiny-llava --max-new-tokens 2,3,4,6,8,16,24,32 --repeats 4``
``--runs`` times with ``--method direct`` and as often with ``--method subtract``, then
``phasetime check`` on each, and prints the ``tpot_vs_length`` verdict and size of every
run and, for the direct method, the size of the hardware's own per-position profile (issue 26:
a direct run on a quiet machine passes the method; the subtract runs fail it).

    python benchmarks/audit.py [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMAND = ["--model", "tiny-llava", "--max-new-tokens", "2,3,4,6,8,16,24,32", "--repeats", "4", "--quiet"]


def phasetime(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "phasetime", *args], capture_output=True, text=True, env=env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--methods", default="direct,subtract")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    print(f"{'method':<9} {'run':>3} {'check':>6} {'tpot_vs_length':>15} {'effect':>8}  CI over cells")
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods.split(","):
            for i in range(args.runs):
                out = Path(tmp) / f"{method}-{i}"
                start = time.perf_counter()
                run = phasetime("run", *COMMAND, "--method", method, "--out", str(out))
                if run.returncode != 0:
                    raise SystemExit(f"run failed: {run.stderr[-2000:]}")
                check = phasetime("check", str(out), "-o", str(Path(tmp) / "check.json"))
                saved = json.loads((Path(tmp) / "check.json").read_text())
                row = next(c for c in saved["checks"] if c["check"] == "tpot_vs_length")
                found = re.search(r"CI[^\[]*(\[[^\]]*\])", row["detail"])
                ci = found.group(1) if found else row["detail"]
                hardware = re.search(r"profile alone makes TPOT at N=\S+ read (\S+)", row["detail"])
                ci += f"  hardware {hardware.group(1)}" if hardware else ""
                change = "-" if row["value"] is None else f"{100 * row['value']:+.1f}%"
                failing = sorted({c["check"] for c in saved["checks"] if c["verdict"] == "fail"})
                print(f"{method:<9} {i:>3} {'exit ' + str(check.returncode):>6} {row['verdict']:>15} {change:>8}  {ci}"
                      f"  ({time.perf_counter() - start:.0f} s){'  failed: ' + ', '.join(failing) if failing else ''}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
