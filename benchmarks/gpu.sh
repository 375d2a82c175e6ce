#!/usr/bin/env bash
# The GPU checks (issues "phasetime core" and "resources"), as one script for a session that is lent a GPU
# (device tool: run "bash benchmarks/gpu.sh" with timeout_s ~ 480). Writes under $OUT
# (default: ./gpu-out) and prints the tables to paste into docs/benchmarks.md.
#
# Needs only torch, transformers, numpy and Pillow (the GPU image has them): phasetime is
# used from src/ without installing. MODEL / LENGTHS / REPEATS override the defaults, e.g.
#   MODEL=tiny-llava LENGTHS=2,4 REPEATS=2 bash benchmarks/gpu.sh      # a dry run on CPU
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu-out}"
MODEL="${MODEL:-llava-1.4b-random}"
LENGTHS="${LENGTHS:-2,4,8,16,32,64,128}"
REPEATS="${REPEATS:-10}"
PAIRS="${PAIRS:-30}"  # paired calls of the per-decode-step figure (issue 25)
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1
{
  echo "== $(date -u +%FT%TZ)"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv
  python -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, '| transformers', transformers.__version__)"
} 2>&1 | tee "$OUT/environment.txt"
# 1. Overhead, coverage and TPOT bias (the issue's targets).
python benchmarks/overhead.py --model "$MODEL" --lengths "$LENGTHS" --repeats "$REPEATS" --pairs "$PAIRS" \
  --json "$OUT/overhead.json" 2>&1 | tee "$OUT/overhead.txt"
status=${PIPESTATUS[0]}
# 2. Memory, FLOPs, bytes, MFU / MBU and energy per phase, dynamic and static KV cache (issue "resources").
python benchmarks/resources.py --model "$MODEL" --json "$OUT/resources.json" 2>&1 | tee "$OUT/resources.txt"
[ "${PIPESTATUS[0]}" = 0 ] || status=1
# 3. A compiled static cache under the probe (graphs compiled per call) and the GPU's NVML id (issue 17).
python benchmarks/compiled.py --model "$MODEL" 2>&1 | tee "$OUT/compiled.txt"
[ "${PIPESTATUS[0]}" = 0 ] || status=1
# 4. Greedy, assisted (random and perfect draft), prompt lookup and beam search (issue 19).
python benchmarks/decoding.py --model tiny-llava --draft tiny-llava-draft --prompt "Describe this image." \
  --device auto 2>&1 | tee "$OUT/decoding.txt"
[ "${PIPESTATUS[0]}" = 0 ] || status=1
# 5. A model split between cuda:0 and the CPU (accelerate), probe against the wall clock (issue 17).
python benchmarks/split.py --model "$MODEL" 2>&1 | tee "$OUT/split.txt"
[ "${PIPESTATUS[0]}" = 0 ] || status=1
# 6. vLLM (issue 18), where the image has it: the engine tests (injected delays, vLLM's own
#    TPOT / encoder figures, generate()'s greedy tokens) and the example, on the GPU.
if python -c "import vllm, pytest, pyarrow, typer, pydantic, yaml" 2>/dev/null; then
  python -c "import vllm; print('vllm', vllm.__version__)" 2>&1 | tee "$OUT/vllm.txt"
  python -m pytest -q -p no:cacheprovider tests/vllm_engine 2>&1 | tail -3 | tee -a "$OUT/vllm.txt"
  [ "${PIPESTATUS[0]}" = 0 ] || status=1
  python -m phasetime run examples/vllm.yaml --out "$OUT/vllm-run" --quiet 2>&1 | tail -2 | tee -a "$OUT/vllm.txt"
else
  echo "no vllm (or no pytest / pyarrow / typer / pydantic / yaml) in this image: the vLLM step skipped" | tee "$OUT/vllm.txt"
fi
# 7. Operators and kernels per phase under torch.profiler (issue 28): the profiler's cost, and the
#    kernels' busy time against each phase's wall time on the device.
python benchmarks/profiled.py --model "$MODEL" --lengths 8,32 --pairs 5 2>&1 | tee "$OUT/profiled.txt"
[ "${PIPESTATUS[0]}" = 0 ] || status=1
# 8. The ground-truth and probe tests on this machine's torch, when pytest is there (CPU parts).
if python -c "import pytest, pyarrow, typer, pydantic" 2>/dev/null; then
  python -m pytest -q -p no:cacheprovider tests/test_groundtruth.py tests/test_probe.py tests/test_clock.py tests/test_compile.py tests/test_assisted.py tests/test_resources.py tests/test_profile.py \
    2>&1 | tail -3 | tee "$OUT/tests.txt"
else
  echo "pytest or a dependency is missing here: tests skipped" | tee "$OUT/tests.txt"
fi
exit "$status"
