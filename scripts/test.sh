#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite: the command CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
exec "${PYTEST_MMLU_VENV:-.venv}/bin/python" -m pytest -n 2 "$@"
