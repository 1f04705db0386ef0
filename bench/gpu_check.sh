#!/usr/bin/env bash
# The one prepared GPU command of issue 10 (one H100, under 8 minutes). Here first:
# `bash bench/gpu_prepare.sh` (fills .gpu/), then `device run` with carry [".gpu"] and the command
# `bash bench/gpu_check.sh`. It runs:
#   1. the CUDA tests: the fused FlexAttention backend compiled on CUDA against float64
#      (tests/engine/test_fused_attention.py) and bf16/fp16 exactness against the float64 truth on real
#      5-shot MMLU rows (tests/agreement/test_exactness.py, which runs on the GPU there: device auto = cuda);
#   2. W5 on the GPU in fp32, lm-eval's hf backend at batch 8 side by side (SmolLM2's shape and
#      tokenizer with seeded random weights: its 517 MB of weights cannot travel);
#   3. a 7B-shaped Qwen2 (random bf16 weights) 5-shot under a 24 GiB budget: the batch our engine
#      reaches, the largest lm-eval batch that fits, both peaks, our TFLOP/s.
# Results: $OUT/gpu_check_results.jsonl (bench/ without $OUT) and gpu_check.log beside it.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-bench}"
export GPU_CHECK_OUT="$out/gpu_check_results.jsonl" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
rm -f "$GPU_CHECK_OUT"
py=python3
site=/tmp/gpu-site
[ -d .gpu/whl ] && $py -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$site" .gpu/whl/*.whl
export PYTHONPATH="$site:$PWD:$PWD/tests${PYTHONPATH:+:$PYTHONPATH}"
export PYTEST_MMLU_REAL_DATA="$PWD/.gpu/mmlu.zip"
export PYTEST_MMLU_BENCH_MODEL=/tmp/smollm2-random
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    $py -c "import torch, transformers, lm_eval; print('torch', torch.__version__, 'transformers', transformers.__version__)"
    echo "== 1. CUDA tests"
    timeout 240 $py -m pytest -p pytest_mmlu.plugin -q -p no:cacheprovider -p no:randomly \
        tests/engine/test_fused_attention.py tests/agreement/test_exactness.py -k "fused_attention or ((llama or gemma2) and float16)"
    echo "== 2. W5 on the GPU"
    $py bench/gpu_check.py random-smollm2 .gpu/smollm2 "$PYTEST_MMLU_BENCH_MODEL"
    timeout 150 $py bench/gpu_check.py w5
    echo "== 3. 7B-shaped model under 24 GiB"
    timeout 200 $py bench/gpu_check.py big
} 2>&1 | tee "$out/gpu_check.log"
