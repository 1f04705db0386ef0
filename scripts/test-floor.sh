#!/usr/bin/env bash
# The dependency-floor job (.ci/run calls it after the main suite): the whole test suite on
# the floors pyproject.toml states (scripts/setup-floor.sh sets them up). Extra arguments
# go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${PYTEST_MMLU_FLOOR_VENV:-.venv-floor}
PYTEST_MMLU_MODELS_DIR=$(bash scripts/setup-floor.sh)
export PYTEST_MMLU_MODELS_DIR
# The whole suite, less the half-precision columns of the architecture matrix: torch is the
# same build in both jobs, and the fp32 column still runs every architecture on the floor
# transformers and lm-eval. CI must stay under 25 minutes for both jobs.
exec "$venv/bin/python" -m pytest -n 2 -k "not (matches_float64_truth_and_lm_eval and (float16 or bfloat16))" "$@"
