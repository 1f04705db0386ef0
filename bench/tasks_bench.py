"""lm-eval tasks beyond MMLU (issue 19): lm-eval hf and this engine side by side, one run.

    python bench/tasks_bench.py [--docs 100] [--rounds 2] [--task arc_style|hellaswag_style]

Two tasks of tests/task_folders.py (each lm-eval's own registry YAML over made-up local
data): ARC-style 25-shot and HellaSwag-style 10-shot, ``--docs`` documents each, on
SmolLM2-135M-Instruct, fp32, CPU.  Each measurement runs in a fresh subprocess (its own peak
RSS); per task: lm-eval hf (batch 8), then the engine, ``--rounds`` times.
Prints the wall of each, the ratio of the medians, the peaks, the share of tokens the prefix
tree saved, and whether every document's metrics and log-likelihoods agree.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))
from w5_bench import machine, model_path, peak_rss, run_worker  # noqa: E402

CASES = [("arc_style", 25), ("hellaswag_style", 10)]
LM_EVAL_BATCH = 8


def worker_lm_eval(args: dict) -> dict:
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    from pytest_mmlu.tasks.registry import task_manager

    model = HFLM(pretrained=args["model"], dtype="float32", batch_size=LM_EVAL_BATCH, device="cpu")
    manager = task_manager(args["folder"], defaults=False)
    start = time.perf_counter()
    out = simple_evaluate(
        model=model,
        tasks=[args["task"]],
        task_manager=manager,
        num_fewshot=args["shots"],
        limit=args["docs"],
        log_samples=True,
        bootstrap_iters=0,
    )
    seconds = time.perf_counter() - start
    samples = out["samples"][args["task"]]
    return {
        "seconds": seconds,
        "peak_rss": peak_rss(),
        "lls": [[float(r[0][0]) for r in s["resps"]] for s in samples],
        "metrics": [{m: float(s[m]) for m in s["metrics"]} for s in samples],
    }


def worker_engine(args: dict) -> dict:
    from pytest_mmlu.models.load import load_model
    from pytest_mmlu.settings import Settings
    from pytest_mmlu.tasks.evaluation import TaskEvaluator
    from pytest_mmlu.tasks.registry import load_task_set, task_manager

    evaluator = TaskEvaluator(load_model(Settings(model=args["model"], dtype="float32", device="cpu")))
    manager = task_manager(args["folder"], defaults=False)
    load_peak = peak_rss()
    start = time.perf_counter()  # task loading inside the clock, as in simple_evaluate's
    result = evaluator.evaluate(load_task_set(manager, args["task"], args["shots"]), limit=args["docs"])
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "peak_rss": max(load_peak, result.peak_memory_bytes, peak_rss()),
        "tokens": result.tokens,
        "saved": result.prefix_tokens_saved,
        "mode": result.engine_mode,
        "lls": [list(d.loglikelihoods) for d in result.docs],
        "metrics": [d.metrics for d in result.docs],
    }


def run(kind: str, **args) -> dict:
    return run_worker(__file__, kind, args)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_worker":
        worker = {"lm_eval": worker_lm_eval, "engine": worker_engine}[sys.argv[2]]
        print(json.dumps(worker(json.loads(sys.argv[3]))))
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2, help="lm-eval then engine, this many times")
    parser.add_argument("--task", choices=[name for name, _ in CASES], help="one of the two only")
    options = parser.parse_args()
    from task_folders import write_task_folder

    model = model_path()
    folder = write_task_folder(Path(tempfile.mkdtemp()) / "tasks", docs=options.docs, train_docs=60)
    print(machine())
    for task, shots in CASES:
        if options.task not in (None, task):
            continue
        args = {"model": model, "folder": str(folder), "task": task, "shots": shots, "docs": options.docs}
        theirs, ours = [], []
        for _ in range(options.rounds):
            theirs.append(run("lm_eval", **args))
            ours.append(run("engine", **args))
        t, o = theirs[0], ours[0]
        worst = max(abs(a - b) for x, y in zip(t["lls"], o["lls"]) for a, b in zip(x, y))
        same = all(abs(a[m] - b[m]) <= 1e-4 for a, b in zip(t["metrics"], o["metrics"]) for m in a) and len(
            t["metrics"]
        ) == len(o["metrics"])
        t_walls = ", ".join(f"{r['seconds']:.1f}" for r in theirs)
        o_walls = ", ".join(f"{r['seconds']:.1f}" for r in ours)
        t_wall = statistics.median(r["seconds"] for r in theirs)
        o_wall = statistics.median(r["seconds"] for r in ours)
        total = o["tokens"] + o["saved"]
        print(
            f"{task}, {shots}-shot, {len(o['metrics'])} docs: lm-eval hf batch {LM_EVAL_BATCH} "
            f"{t_walls} s; engine {o_walls} s; wall ratio {t_wall / o_wall:.2f}x; "
            f"peak RSS {max(r['peak_rss'] for r in theirs) / 1e9:.2f} GB vs "
            f"{max(r['peak_rss'] for r in ours) / 1e9:.2f} GB; prefix tree ran {o['tokens']} of {total} "
            f"tokens ({o['saved'] / total:.0%} saved, {o['mode']}); max |ll diff| {worst:.2e}; "
            f"every document's metrics equal: {same}"
        )


if __name__ == "__main__":
    main()
