"""The README's architecture table: every architecture's scores against the float64 truth and
lm-eval's hf backend, fp32 / bf16 / fp16, on real 5-shot MMLU rows of 2,800+ tokens.

Runs the comparisons of tests/agreement/test_exactness.py (same tiny random models, same MMLU-trained
BPE tokenizer) on more questions and prints a Markdown table.

    .venv/bin/python bench/exactness.py [--limit 5] [--data ../shared/mmlu/mmlu.zip] [ARCH ...]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import test_exactness as exactness
from factories import LONG_ARCH_CONFIGS, save_long_arch_model, save_mmlu_bpe_tokenizer

DTYPES = ("float32", "bfloat16", "float16")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("archs", nargs="*", default=list(LONG_ARCH_CONFIGS))
    parser.add_argument("--limit", type=int, default=5)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "mmlu" / "mmlu.zip"))
    args = parser.parse_args()

    from pytest_mmlu.lm_eval_adapter import mmlu_tasks
    from pytest_mmlu.mmlu.data import MmluData
    from pytest_mmlu.mmlu.results import predict

    exactness.LIMIT = args.limit
    data = MmluData(args.data)
    tasks = list(mmlu_tasks(data, [exactness.SUBJECT]).values())
    work = Path(tempfile.mkdtemp(prefix="pytest-mmlu-exactness-"))
    save_mmlu_bpe_tokenizer(work / "tokenizer", Path(args.data))
    print(
        f"{exactness.SUBJECT}, 5-shot, first {args.limit} questions; max |delta| over all "
        f"log-likelihoods; 'same' = same prediction "
        f"as lm-eval where the truth's top two are further apart than twice both engines' "
        f"error (all questions in fp32)"
    )
    print("| arch | mode | row tokens | dtype | ours vs truth | lm-eval vs truth | ours vs lm-eval | same |")
    print("|---|---|---|---|---|---|---|---|")
    for arch in args.archs:
        folder = save_long_arch_model(work / arch, arch, work / "tokenizer")
        for dtype in DTYPES:
            got = exactness.compare(folder, dtype, data, tasks)
            same = total = 0
            for key, truth in got["truth"].items():
                errors = [max(abs(a - b) for a, b in zip(got[name][key], truth)) for name in ("ours", "lm_eval")]
                if dtype == "float32" or exactness.decisive(truth, max(errors)):
                    total += 1
                    same += predict(got["ours"][key]) == predict(got["lm_eval"][key])
            ours, theirs = got["ours"], got["lm_eval"]
            print(
                f"| {arch} | {got['mode']} | {got['row_tokens']} | {dtype} | "
                f"{exactness.max_diff(ours, got['truth']):.1e} | "
                f"{exactness.max_diff(theirs, got['truth']):.1e} | "
                f"{exactness.max_diff(ours, theirs):.1e} | {same}/{total} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
