"""Quantized variants against the full-precision model (issue 12; figures go to BENCHMARKS.md).

SmolLM2-135M-Instruct on CPU, 5-shot, the first N test questions of three subjects, loaded
as fp32, int8 and int4 (torchao weight-only, ``--mmlu-quantization``). Each variant runs in a
fresh subprocess, so its peak memory is its own. For each: weight bytes as stored, the
evaluation's peak RSS (weights included, as a budget sees it), load and evaluation wall
seconds, accuracy, the share of questions with the fp32 model's answer, and the paired exact
McNemar p-values (one-sided: worse, better) against fp32 on the same questions.

    python bench/variants.py                      # 3 subjects x 100 questions, fp32/int8/int4
    python bench/variants.py --limit 5 int8       # a quick look
    python bench/variants.py --forward            # forward speed only, the variants interleaved
    python bench/variants.py --truth 2            # each variant against its own float64 truth

``--forward`` loads the three in one process and times one 512-token forward of each in turn,
five rounds, medians: on a machine whose load drifts (other jobs), interleaving keeps the
comparison fair where separate runs minutes apart are not.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from w5_bench import data_path, model_path  # noqa: E402

SUBJECTS = ["elementary_mathematics", "high_school_psychology", "miscellaneous"]
VARIANTS = ["none", "int8", "int4"]


def run_one(args: dict) -> dict:
    """One variant, in this process: load, evaluate, report."""
    from pytest_mmlu.marks import make_eval_spec
    from pytest_mmlu.mmlu.data import MmluData
    from pytest_mmlu.mmlu.evaluation import Evaluator
    from pytest_mmlu.models.load import load_model
    from pytest_mmlu.models.variants import Variant
    from pytest_mmlu.settings import Settings

    start = time.perf_counter()
    loaded = load_model(Settings(model=args["model"], device="cpu"), Variant(args["variant"]))
    load_seconds = time.perf_counter() - start
    result = Evaluator(loaded, MmluData(args["data"])).evaluate(make_eval_spec(args["subjects"], 5, args["limit"]))
    return {
        "variant": loaded.variant.label,
        "weight_bytes": loaded.weight_bytes,
        "load_seconds": load_seconds,
        "seconds": result.seconds,
        "peak_bytes": result.peak_memory_bytes,
        "accuracy": result.accuracy,
        "n": result.n,
        "engine_mode": result.engine_mode,
        "tokens": result.tokens,
        "predictions": {f"{q.subject}/{q.index}": [q.prediction, q.target] for q in result.questions},
    }


def in_subprocess(args: dict) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(args)], capture_output=True, text=True, cwd=ROOT
    )
    if out.returncode:
        raise SystemExit(f"{args['variant']} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(runs: list[dict]) -> list[str]:
    from pytest_mmlu.stats import compare_paired

    full = runs[0]["predictions"]
    keys = sorted(full)
    lines = [
        "| variant | weight bytes | peak RSS | load s | eval s | accuracy | same answer as fp32 | "
        "McNemar p (worse / better) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        mine = run["predictions"]
        same = sum(mine[k][0] == full[k][0] for k in keys)
        c = compare_paired([full[k][0] == full[k][1] for k in keys], [mine[k][0] == mine[k][1] for k in keys])
        lines.append(
            f"| {run['variant']} | {run['weight_bytes'] / 2**20:.1f} MiB | {run['peak_bytes'] / 2**20:.0f} MiB "
            f"| {run['load_seconds']:.1f} | {run['seconds']:.1f} | {run['accuracy']:.3f} | "
            f"{same}/{len(keys)} ({same / len(keys):.1%}) | {c.p_worse:.3f} / {c.p_better:.3f} |"
        )
    return lines


def forward_speed(rounds: int = 5, tokens: int = 512) -> str:
    import torch

    from pytest_mmlu.models.load import load_model
    from pytest_mmlu.models.variants import Variant
    from pytest_mmlu.settings import Settings

    models = {v: load_model(Settings(model=model_path(), device="cpu"), Variant(v)).model for v in VARIANTS}
    ids = torch.randint(0, 40000, (1, tokens), generator=torch.Generator().manual_seed(0))
    seconds: dict[str, list[float]] = {v: [] for v in models}
    with torch.inference_mode():
        for model in models.values():
            model(ids, logits_to_keep=1)  # warm-up
        for _ in range(rounds):
            for variant, model in models.items():
                start = time.perf_counter()
                model(ids, logits_to_keep=1)
                seconds[variant].append(time.perf_counter() - start)
    median = {v: sorted(s)[len(s) // 2] for v, s in seconds.items()}
    return (
        f"one {tokens}-token forward, median of {rounds} interleaved rounds, {torch.get_num_threads()} "
        f"threads: "
        + ", ".join(
            f"{'fp32' if v == 'none' else v} {median[v]:.3f} s ({median[v] / median['none']:.2f}x fp32)"
            for v in VARIANTS
        )
    )


def against_truth(limit: int) -> list[str]:
    """Each variant's log-likelihoods against the float64 truth of the same variant (its
    dequantized weights in float64, one unpadded forward per row: tests/truth.py)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from truth import truth_loglikelihoods

    from pytest_mmlu.marks import make_eval_spec
    from pytest_mmlu.mmlu.data import MmluData
    from pytest_mmlu.mmlu.evaluation import Evaluator
    from pytest_mmlu.mmlu.results import predict
    from pytest_mmlu.models.load import load_model
    from pytest_mmlu.models.variants import Variant
    from pytest_mmlu.settings import Settings

    data = MmluData(data_path())
    spec = make_eval_spec(SUBJECTS, 5, limit)
    lines = [
        f"5-shot, first {limit} test questions of {', '.join(SUBJECTS)}, against each variant's own float64 truth:"
    ]
    for variant in VARIANTS:
        loaded = load_model(Settings(model=model_path(), device="cpu"), Variant(variant))
        evaluator = Evaluator(loaded, data)
        requests, _ = evaluator.requests(spec)
        result = evaluator.evaluate(spec)
        ours = [ll for q in result.questions for ll in q.loglikelihoods]
        truth = truth_loglikelihoods(loaded.model, requests, evaluator.max_length)
        same = sum(q.prediction == predict(truth[4 * i : 4 * i + 4]) for i, q in enumerate(result.questions))
        lines.append(
            f"  {loaded.variant.label}: {len(ours)} log-likelihoods, max |delta| "
            f"{max(abs(a - b) for a, b in zip(ours, truth)):.1e}, same prediction "
            f"{same}/{len(result.questions)}"
        )
        del loaded, evaluator
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("variants", nargs="*", default=VARIANTS)
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--worker")
    parser.add_argument("--json", help="also write every run (predictions included) to this file")
    parser.add_argument("--forward", action="store_true", help="forward speed only (see above)")
    parser.add_argument("--truth", type=int, metavar="N", help="N questions per subject against the float64 truth")
    options = parser.parse_args()
    if options.forward:
        print(forward_speed())
        return
    if options.truth:
        print("\n".join(against_truth(options.truth)))
        return
    if options.worker:
        print(json.dumps(run_one(json.loads(options.worker))))
        return
    variants = ["none", *[v for v in options.variants if v != "none"]]  # fp32 is the reference
    common = {"model": model_path(), "data": data_path(), "subjects": SUBJECTS, "limit": options.limit}
    runs = [in_subprocess({**common, "variant": v}) for v in variants]
    if options.json:
        Path(options.json).write_text(json.dumps(runs))
    import torch
    import torchao

    print(
        f"SmolLM2-135M-Instruct, CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, torchao {torchao.__version__}), 5-shot, {', '.join(SUBJECTS)}, "
        f"first {options.limit} test questions each; each variant in a fresh process"
    )
    print("\n".join(table(runs)))


if __name__ == "__main__":
    main()
