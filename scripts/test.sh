#!/usr/bin/env bash
# Quickstart 2: set up, type-check and run the test suite, offline: every test against the
# newest supported transformers (in .venv), and the tests that depend on the transformers
# version again against the oldest (in .venv-oldest, where vision runs inside the prefill
# forward), then the vLLM backend's tests against the real engine (in .venv-vllm, built by
# scripts/setup-vllm.sh; VLLM=0 skips them). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
NEWEST="${NEWEST:-5.24.0}"
OLDEST="${OLDEST:-5.17.0}"
export HF_HUB_OFFLINE=1
status=0
VENV=.venv TRANSFORMERS="$NEWEST" EXTRAS="test,ray" bash scripts/setup.sh
echo "== mypy"
.venv/bin/python -m mypy || status=$?
echo "== pytest with transformers $NEWEST (every test)"
.venv/bin/python -m pytest -q -p no:cacheprovider "$@" || status=$?
VENV=.venv-oldest TRANSFORMERS="$OLDEST" bash scripts/setup.sh
echo "== pytest with transformers $OLDEST (the tests that depend on its version)"
.venv-oldest/bin/python -m pytest -q -p no:cacheprovider -m "not anyversion" "$@" || status=$?
if [ "${VLLM:-1}" != 0 ]; then
  bash scripts/setup-vllm.sh
  echo "== pytest of the vLLM backend against vLLM's engine (tests/vllm_engine)"
  .venv-vllm/bin/python -m pytest -q -p no:cacheprovider tests/vllm_engine tests/test_steps.py tests/test_backends.py || status=$?
fi
exit $status
