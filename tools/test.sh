#!/usr/bin/env bash
# Set up ./.venv, lint (ruff, installed by the test extra), then run the test suite: the README's test command, and
# what CI runs. A lint error fails before any test runs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck disable=SC1091
. tools/setup_env.sh
python -m ruff check .
python -m pytest -q "$@"
