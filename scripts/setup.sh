#!/usr/bin/env bash
# Create (or update) a virtual environment with CPU torch, phasetime and its test tools.
#   VENV=.venv TRANSFORMERS=5.24.0 EXTRAS=test bash scripts/setup.sh
# torch is installed first and pinned: `torch==2.13.0` is the CPU build here, while an
# unpinned torch would pull a CUDA build of several GB.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
TORCH="${TORCH:-2.13.0}"
TRANSFORMERS="${TRANSFORMERS:-5.24.0}"
EXTRAS="${EXTRAS:-test}"
PYTHON="${PYTHON:-python3}"

. scripts/venv.sh
pip install "torch==$TORCH"
pip install -e ".[$EXTRAS]" "transformers==$TRANSFORMERS"
echo "ready: $VENV (torch $TORCH, transformers $TRANSFORMERS, extras $EXTRAS)"
