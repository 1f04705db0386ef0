#!/usr/bin/env bash
# Set-up of the dependency-floor job (idempotent): a second virtualenv (.venv-floor,
# or $PYTEST_MMLU_FLOOR_VENV) with torch, transformers and lm-eval pinned to exactly
# the floors pyproject.toml states (">=X" becomes "==X"; the other dependencies resolve
# as usual), and the SmolLM2 folder built by the floor transformers. Prints the models
# folder to use (PYTEST_MMLU_MODELS_DIR). .ci/run starts it while the main suite runs;
# scripts/test-floor.sh runs it again (then it only checks) before the suite.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${PYTEST_MMLU_FLOOR_VENV:-.venv-floor}
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv" >&2
fi
# "name==floor" for each of the three, read from [project] dependencies.
mapfile -t pins < <("$venv/bin/python" - <<'EOF'
import re
text = open("pyproject.toml", encoding="utf-8").read()
deps = re.search(r"^dependencies\s*=\s*\[(.*?)^\]", text, re.S | re.M).group(1)
for name in ("torch", "transformers", "lm-eval"):
    found = re.search(r'^\s*"%s\s*>=\s*([0-9][0-9.]*)"' % re.escape(name), deps, re.M)
    if not found:
        raise SystemExit(f"setup-floor.sh: no '{name}>=X' floor in pyproject.toml dependencies")
    print(f"{name}=={found.group(1)}")
EOF
)
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
# torch first and alone, as in setup.sh: the CPU build, not a multi-GB CUDA one.
"${pip[@]}" "${pins[0]}" >&2
"${pip[@]}" -e ".[dev]" "${pins[@]}" >&2
"$venv/bin/python" - "${pins[@]}" <<'EOF'
import sys
from importlib.metadata import version
for pin in sys.argv[1:]:
    name, want = pin.split("==")
    got = version(name).split("+")[0]
    if got != want:
        raise SystemExit(f"setup-floor.sh: {name} {got} installed, floor is {want}")
print("floor:", ", ".join(sys.argv[1:]), file=sys.stderr)
EOF
# The SmolLM2 folder is built by the floor transformers in its own cache: a folder
# saved by a newer transformers can name classes the floor lacks (5.x writes
# tokenizer_class "TokenizersBackend", which 4.x cannot load).
floor_tag=$(IFS=_; echo "${pins[*]}" | tr '=' '-')
export PYTEST_MMLU_MODELS_DIR=${PYTEST_MMLU_FLOOR_MODELS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/pytest-mmlu/models-floor-$floor_tag}
"$venv/bin/python" scripts/build_smollm2.py >/dev/null
echo "$PYTEST_MMLU_MODELS_DIR"
