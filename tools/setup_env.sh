#!/usr/bin/env bash
# Create ./.venv (once) and install yolo_ext with its test extras. Sourced by tools/test.sh and tools/demo.sh.
# TORCH_SPEC chooses the torch build (pip requirement words; default torch==2.14.1 torchvision==0.29.1, pip's
# default build, which on Linux x86-64 includes CUDA). Set it to "" once your own build is installed in .venv.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install -q --upgrade pip
if ! python -c "import torch, torchvision" 2>/dev/null; then
  # pip's default build of torch==2.14.1: on Linux x86-64 that is the CUDA build (its libraries are several GB)
  spec="${TORCH_SPEC-torch==2.14.1 torchvision==0.29.1}"
  if [ -z "$spec" ]; then
    echo "setup_env.sh: TORCH_SPEC is empty (\"use my torch\"), but torch/torchvision are not importable in .venv." >&2
    echo "Install your build into .venv first (.venv/bin/python -m pip install torch torchvision ...)," >&2
    echo "or set TORCH_SPEC to a pip requirement, or unset it for torch==2.14.1 torchvision==0.29.1." >&2
    exit 2
  fi
  # shellcheck disable=SC2086
  python -m pip install -q $spec
fi
python -m pip install -q -e ".[test]"
export YOLO_OFFLINE=1
