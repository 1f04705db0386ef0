#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite: the command CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
# .ci/run has just set up (and its floor set-up may be installing this package beside us:
# two editable installs at once would race on the package's egg-info).
if [ "${PYTEST_MMLU_SET_UP:-}" != 1 ]; then
    bash scripts/setup.sh >/dev/null
fi
exec "${PYTEST_MMLU_VENV:-.venv}/bin/python" -m pytest -n 2 "$@"
