#!/usr/bin/env bash
# Create ./.venv (once) and install yolo_ext with its test extras. Sourced by tools/test.sh and tools/demo.sh.
# TORCH_SPEC chooses the torch build; set it to "" if torch is already installed in the environment you use.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install -q --upgrade pip
if ! python -c "import torch, torchvision" 2>/dev/null; then
  # shellcheck disable=SC2086
  python -m pip install -q ${TORCH_SPEC-torch==2.14.1 torchvision==0.29.1}
fi
python -m pip install -q -e ".[test]"
export YOLO_OFFLINE=1
