#!/usr/bin/env bash
# Quickstart 2: run the test suite, offline, against the newest supported transformers
# (in .venv) and the oldest (in .venv-oldest, where vision runs inside the prefill forward).
set -euo pipefail
cd "$(dirname "$0")/.."
NEWEST="${NEWEST:-5.24.0}"
OLDEST="${OLDEST:-5.17.0}"
export HF_HUB_OFFLINE=1
status=0
for pair in ".venv:$NEWEST" ".venv-oldest:$OLDEST"; do
  venv="${pair%%:*}"; version="${pair##*:}"
  VENV="$venv" TRANSFORMERS="$version" bash scripts/setup.sh
  echo "== pytest with transformers $version"
  "$venv/bin/python" -m pytest -q -p no:cacheprovider "$@" || status=$?
done
exit $status
