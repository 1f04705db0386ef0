#!/usr/bin/env bash
# Prepares .gpu/ (git-ignored, about 30 MB) for `bash bench/gpu_check.sh` on the device machine,
# which has its own python3.12 with CUDA torch and no network, and receives only the working
# tree plus carried paths (64 MiB a call): run `device run` with carry [".gpu"].
#   .gpu/whl/    wheels the device image lacks (it already holds torch, accelerate, filelock,
#                fsspec, huggingface-hub, nvidia-ml-py, pandas, peft, psutil, pyarrow, pytest,
#                pytest-xdist, sacrebleu, scikit-learn, tokenizers, xxhash: see
#                /work/.library/device/KINDS.md), at the versions CI uses, without dependencies
#   .gpu/mmlu.zip               the real MMLU (../shared does not travel)
#   .gpu/smollm2/               SmolLM2-135M-Instruct's config and tokenizer, no weights (517 MB
#                               would not travel): the check gives it seeded random weights
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
rm -rf .gpu && mkdir -p .gpu/whl .gpu/smollm2
platforms=()
for n in 2_28 2_27 2_17; do platforms+=(--platform "manylinux_${n}_x86_64"); done
platforms+=(--platform manylinux2014_x86_64 --platform manylinux1_x86_64)
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d .gpu/whl \
    transformers==5.24.0 lm-eval==0.4.13 datasets evaluate dill==0.4.0 multiprocess more_itertools \
    pytablewriter DataProperty mbstrdecoder pathvalidate tabledata tcolorpy typepy chardet
# Published as source only: pure-Python wheels built here.
python3 -m pip wheel --quiet --no-deps -w .gpu/whl rouge-score sqlitedict word2number
cp "${PYTEST_MMLU_REAL_DATA:-../shared/mmlu/mmlu.zip}" .gpu/mmlu.zip
model="${PYTEST_MMLU_SMOLLM2:-$HOME/.cache/pytest-mmlu/models/SmolLM2-135M-Instruct}"
cp "$model"/{config.json,generation_config.json,tokenizer.json,tokenizer_config.json,chat_template.jinja} .gpu/smollm2/
du -sh .gpu
