#!/usr/bin/env bash
# Quickstart 1: set up .venv and time every phase of the default built-in model (tiny-llava)
# over output lengths 1..32, writing results/demo/{measurements.parquet,run.json}.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1
exec .venv/bin/phasetime run --out results/demo --overwrite "$@"
