#!/usr/bin/env bash
# Set up ./.venv and run the test suite: the README's test command, and what CI runs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck disable=SC1091
. tools/setup_env.sh
python -m pytest -q "$@"
