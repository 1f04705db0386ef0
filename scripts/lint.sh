#!/usr/bin/env bash
# Lint, format, types and the import graph (run by CI before the tests). Set up first
# (scripts/setup.sh) or point PYTEST_MMLU_VENV at an environment with the dev extras.
set -uo pipefail
cd "$(dirname "$0")/.."
bin=${PYTEST_MMLU_VENV:-.venv}/bin
status=0
run() {
    echo "-- $*"
    "$@" || status=1
}
run "$bin/ruff" check pytest_mmlu scripts tests bench examples conftest.py
run "$bin/ruff" format --check pytest_mmlu scripts tests bench examples conftest.py
run "$bin/mypy"
run "$bin/python" scripts/import_graph.py
exit $status
