#!/usr/bin/env bash
# The dependency-floor job (.ci/run calls it after the main suite): the whole test suite on
# the floors pyproject.toml states (scripts/setup-floor.sh sets them up). Extra arguments
# go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${PYTEST_MMLU_FLOOR_VENV:-.venv-floor}
PYTEST_MMLU_MODELS_DIR=$(bash scripts/setup-floor.sh)
export PYTEST_MMLU_MODELS_DIR
# The whole suite, less what only torch or our own code decides (the same in both jobs), for CI
# to stay under 25 minutes: the half-precision columns of the architecture matrix (its fp32
# column still runs every architecture on the floor transformers and lm-eval), the
# bit-identical repeat across fresh processes, and the task gates' path matrix (lm-eval's part
# of it, loading tasks and its files both ways, runs here in the task agreement and unit tests).
deselect="(matches_float64_truth_and_lm_eval and (float16 or bfloat16)) or fresh_processes_give_bit_identical"
deselect="$deselect or every_task_gate_gives_the_same_verdict_on_every_path"
exec "$venv/bin/python" -m pytest -n 2 -k "not ($deselect)" "$@"
