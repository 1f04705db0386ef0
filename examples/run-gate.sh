#!/usr/bin/env bash
# Set up (idempotent: virtualenv, torch, pytest-mmlu, the SmolLM2 model folder) and run the
# example release gate on SmolLM2-135M-Instruct.  MMLU comes from $PYTEST_MMLU_DATA if set,
# else ../shared/mmlu/mmlu.zip beside the checkout if present, else the hub (cais/mmlu).
set -euo pipefail
cd "$(dirname "$0")/.."
model=$(bash scripts/setup.sh | tail -n 1)
data=${PYTEST_MMLU_DATA:-}
if [ -z "$data" ] && [ -f ../shared/mmlu/mmlu.zip ]; then data=../shared/mmlu/mmlu.zip; fi
exec "${PYTEST_MMLU_VENV:-.venv}/bin/python" -m pytest examples/ \
    --mmlu-model "$model" --mmlu-data "${data:-cais/mmlu}" --mmlu-report mmlu-report.json \
    --mmlu-baseline examples/mmlu-baseline.json \
    --rootdir examples "$@"
