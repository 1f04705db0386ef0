#!/usr/bin/env bash
# The dependency-floor job (.ci/run calls it after the main suite): a second
# virtualenv (.venv-floor, or $PYTEST_MMLU_FLOOR_VENV) with torch, transformers
# and lm-eval pinned to exactly the floors pyproject.toml states (">=X" becomes
# "==X"; the other dependencies resolve as usual), then the whole test suite on it.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${PYTEST_MMLU_FLOOR_VENV:-.venv-floor}
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
# "name==floor" for each of the three, read from [project] dependencies.
mapfile -t pins < <("$venv/bin/python" - <<'EOF'
import re
text = open("pyproject.toml", encoding="utf-8").read()
deps = re.search(r"^dependencies\s*=\s*\[(.*?)^\]", text, re.S | re.M).group(1)
for name in ("torch", "transformers", "lm-eval"):
    found = re.search(r'^\s*"%s\s*>=\s*([0-9][0-9.]*)"' % re.escape(name), deps, re.M)
    if not found:
        raise SystemExit(f"test-floor.sh: no '{name}>=X' floor in pyproject.toml dependencies")
    print(f"{name}=={found.group(1)}")
EOF
)
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
# torch first and alone, as in setup.sh: the CPU build, not a multi-GB CUDA one.
"${pip[@]}" "${pins[0]}"
"${pip[@]}" -e ".[dev]" "${pins[@]}"
"$venv/bin/python" - "${pins[@]}" <<'EOF'
import sys
from importlib.metadata import version
for pin in sys.argv[1:]:
    name, want = pin.split("==")
    got = version(name).split("+")[0]
    if got != want:
        raise SystemExit(f"test-floor.sh: {name} {got} installed, floor is {want}")
print("floor:", ", ".join(sys.argv[1:]))
EOF
# The SmolLM2 folder is built by the floor transformers in its own cache: a folder
# saved by a newer transformers can name classes the floor lacks (5.x writes
# tokenizer_class "TokenizersBackend", which 4.x cannot load).
floor_tag=$(IFS=_; echo "${pins[*]}" | tr '=' '-')
export PYTEST_MMLU_MODELS_DIR=${PYTEST_MMLU_FLOOR_MODELS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/pytest-mmlu/models-floor-$floor_tag}
"$venv/bin/python" scripts/build_smollm2.py >/dev/null
# The whole suite, less the half-precision columns of the architecture matrix (its fp32
# column still runs every architecture here): CI must stay under 25 minutes for both jobs.
exec "$venv/bin/python" -m pytest -n 2 -k "not (matches_float64_truth_and_lm_eval and float16)" "$@"
