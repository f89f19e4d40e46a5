#!/usr/bin/env bash
# README quick start: set up ./.venv, then run the end-to-end demo on the BCCD subset shipped in the package.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck disable=SC1091
. tools/setup_env.sh
python tools/demo.py "$@"
