#!/usr/bin/env bash
# Install the lowest versions yolo_ext declares in pyproject.toml into a throwaway venv and run tools/floors_smoke.py
# there: import, build YAMLs of every module family, prune (a ratio, and the tools' default with its measured channel
# multiple), save, reload (also under ULTRALYTICS_SAFE_LOAD=1), fine-tune one epoch with distillation, uninstall.
#
# Not part of the test suite: it downloads several GB (pip's default Linux torch build pulls CUDA libraries) and takes
# a few minutes. Needs python3 (3.10 or 3.11: torch 2.1 has no wheels for 3.12) and pip access to PyPI.
#
#   bash tools/check_floors.sh              # a new venv in a temporary folder, removed afterwards
#   bash tools/check_floors.sh /tmp/floors  # this venv folder, kept (a second run reuses what it installed)
#
# Other versions: FLOOR_TORCH=2.4.1 FLOOR_TORCHVISION=0.19.1 FLOOR_ULTRALYTICS=8.4.150 bash tools/check_floors.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
TORCH="${FLOOR_TORCH:-2.1.2}"
TORCHVISION="${FLOOR_TORCHVISION:-0.16.2}"
ULTRALYTICS="${FLOOR_ULTRALYTICS:-8.4.104}"
TORCH_PRUNING="${FLOOR_TORCH_PRUNING:-1.6.0}"
if [ $# -ge 1 ]; then
  VENV="$1"
else
  TMP="$(mktemp -d)"
  trap 'rm -rf "$TMP"' EXIT
  VENV="$TMP/venv"
fi
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
# torch before 2.3 was built against NumPy 1.x ("A module that was compiled using NumPy 1.x cannot be run in NumPy 2")
"$VENV/bin/python" -m pip install -q "torch==$TORCH" "torchvision==$TORCHVISION" "ultralytics==$ULTRALYTICS" \
  "torch-pruning==$TORCH_PRUNING" "numpy<2"
CACHE="$(mktemp -d)"
YOLO_OFFLINE=1 YOLO_EXT_CACHE="$CACHE" PYTHONPATH="$PWD" "$VENV/bin/python" tools/floors_smoke.py
rm -rf "$CACHE"
