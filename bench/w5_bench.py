"""Benchmarks of the evaluation engine on real MMLU (figures go to BENCHMARKS.md).

Every measurement runs in a fresh subprocess, so each peak RSS is that run's alone.

    python bench/w5_bench.py compare   # W5: lm-eval hf batch 8 vs this engine, side by side
    python bench/w5_bench.py budgets   # W5 under 1.0 / 1.5 / 3 GB; 3 x 30 under binding budgets
    python bench/w5_bench.py shots [SUBJECT ...]  # 3 subjects x 100 questions: 0-shot vs 5-shot
    python bench/w5_bench.py flops     # 5-shot / 0-shot model FLOPs of every subject (no forward)
    python bench/w5_bench.py batches   # predictions at batch 1, 4, 16, 32 and a repeat
    python bench/w5_bench.py subjects57  # all 57 subjects x 20 questions: 5-shot and 0-shot

W5: SmolLM2-135M-Instruct, fp32, CPU, 5-shot, first 10 test questions of abstract_algebra,
high_school_us_history and college_medicine.  Data: $PYTEST_MMLU_REAL_DATA or
../shared/mmlu/mmlu.zip.  Model: built by scripts/build_smollm2.py.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
W5 = ["abstract_algebra", "high_school_us_history", "college_medicine"]


def data_path() -> str:
    return os.environ.get("PYTEST_MMLU_REAL_DATA", str(ROOT.parent / "shared" / "mmlu" / "mmlu.zip"))


def model_path() -> str:
    if os.environ.get("PYTEST_MMLU_BENCH_MODEL"):  # another folder (the GPU check's, bench/gpu_check.sh)
        return os.environ["PYTEST_MMLU_BENCH_MODEL"]
    sys.path.insert(0, str(ROOT / "scripts"))
    from build_smollm2 import build

    return str(build())


def peak_rss() -> int:
    with open("/proc/self/status") as f:
        return next(int(ln.split()[1]) * 1024 for ln in f if ln.startswith("VmHWM"))


# -- workers (one per subprocess) --------------------------------------------------------------
def worker_gemm(_: dict) -> dict:
    import torch

    n, reps = 2048, 20
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    seconds = time.perf_counter() - start
    return {"gflops": 2 * n**3 * reps / seconds / 1e9, "threads": torch.get_num_threads()}


def worker_lm_eval(args: dict) -> dict:
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    from pytest_mmlu.lm_eval_adapter import bare_task_manager, mmlu_tasks
    from pytest_mmlu.mmlu.data import MmluData

    model = HFLM(
        pretrained=args["model"], dtype="float32", batch_size=args["batch_size"], device=args.get("device", "cpu")
    )
    tasks = list(mmlu_tasks(MmluData(args["data"]), args["subjects"]).values())
    start = time.perf_counter()
    out = simple_evaluate(
        task_manager=bare_task_manager(),
        model=model,
        tasks=tasks,
        num_fewshot=args["shots"],
        limit=args["limit"],
        log_samples=True,
        bootstrap_iters=0,
    )
    seconds = time.perf_counter() - start
    lls = {
        f"{t.removeprefix('mmlu_')}/{s['doc_id']}": [r[0][0] for r in s["resps"]]
        for t, samples in out["samples"].items()
        for s in samples
    }
    return {"seconds": seconds, "peak_rss": peak_rss(), "loglikelihoods": lls}


def make_evaluator(args: dict):
    """The plugin's evaluator on the bench's model and data (batch size from ``args``, else auto)."""
    from pytest_mmlu.mmlu.data import MmluData
    from pytest_mmlu.mmlu.evaluation import Evaluator
    from pytest_mmlu.models.load import load_model
    from pytest_mmlu.settings import Settings

    return Evaluator(
        load_model(Settings(model=args["model"], device=args.get("device", "auto"), dtype=args.get("dtype", "auto"))),
        MmluData(args["data"]),
        batch_size=args.get("batch_size", "auto"),
    )


def worker_engine(args: dict) -> dict:
    from pytest_mmlu.marks import make_eval_spec
    from pytest_mmlu.memory.errors import BudgetTooSmall

    evaluator = make_evaluator(args)
    spec = make_eval_spec(args["subjects"], args["shots"], args["limit"])
    # Read the data before the clock starts, as lm-eval's task objects do (the worker builds
    # them before its clock); prompts are built and tokenized again inside the timed call.
    evaluator.requests(spec)
    baseline = evaluator.meter.current()
    # The meter resets the kernel's high-water mark before each batch, so VmHWM read at the end
    # covers only the last batch: the process peak is the loading peak (read now, before any
    # reset) or the evaluation's own peak, whichever is higher.
    load_peak = peak_rss()
    start = time.perf_counter()
    try:
        result = evaluator.evaluate(spec, args.get("budget"))
    except BudgetTooSmall as exc:
        return {"error": str(exc), "baseline": baseline}
    seconds = time.perf_counter() - start  # the whole evaluation, as simple_evaluate's wall
    engine_flops = flops_of(evaluator, spec)
    return {
        "seconds": seconds,
        "engine_seconds": result.seconds,
        "peak_rss": max(load_peak, result.peak_memory_bytes, peak_rss()),
        "load_peak": load_peak,
        "eval_peak": result.peak_memory_bytes,
        "baseline": baseline,
        "batch_sizes": result.batch_sizes,
        "tokens": result.tokens,
        "flops": engine_flops,
        "accuracy": result.accuracy,
        "loglikelihoods": {f"{q.subject}/{q.index}": list(q.loglikelihoods) for q in result.questions},
    }


def flops_of(evaluator, spec) -> float:
    """Model FLOPs the unique tokens need (each node of the prefix tree once): linear layers for
    every unique token, causal attention over each token's context, the LM head only at scored
    positions."""
    from pytest_mmlu.engine import ScoringEngine
    from pytest_mmlu.engine.tree import build_tree

    cfg = evaluator.loaded.model.config
    model = evaluator.loaded.model
    head = model.get_output_embeddings().weight.numel()
    embed = model.get_input_embeddings().weight.numel()
    linear = sum(p.numel() for p in model.parameters()) - embed - (0 if cfg.tie_word_embeddings else head)
    attn_width = cfg.num_attention_heads * getattr(cfg, "head_dim", cfg.hidden_size // cfg.num_attention_heads)
    requests, _ = evaluator.requests(spec)
    engine = ScoringEngine(model, evaluator.max_length, None, evaluator.meter)
    rows = engine.rows(requests)
    total = 0.0

    def visit(node, parent_len):
        nonlocal total
        positions = list(range(parent_len, node.prefix_len))  # this node's prefix extension
        positions += [p for r in node.rows for p in range(node.prefix_len, len(r.tokens))]
        total += sum(2 * linear + 4 * cfg.num_hidden_layers * attn_width * (p + 1) for p in positions)
        total += sum(2 * head * r.scored for r in node.rows)
        for child in node.children:
            visit(child, node.prefix_len)

    visit(build_tree(rows), 0)
    return total


def run(kind: str, **args) -> dict:
    return run_worker(__file__, kind, args)


def run_worker(script: str, kind: str, args: dict) -> dict:
    """``script _worker KIND ARGS`` in a fresh process (its own peak RSS); its last line's JSON."""
    proc = subprocess.run(
        [sys.executable, script, "_worker", kind, json.dumps(args)],
        check=False,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-3000:])
        raise SystemExit(f"{kind} worker failed")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def machine() -> str:
    import torch

    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads"
    )


def compare_lls(a: dict, b: dict) -> tuple[int, float]:
    same = sum(max(range(4), key=lambda i: a[k][i]) == max(range(4), key=lambda i: b[k][i]) for k in a)
    delta = max(abs(x - y) for k in a for x, y in zip(a[k], b[k]))
    return same, delta


# -- benchmarks --------------------------------------------------------------------------------
def bench_compare(model: str, data: str) -> None:
    common = {"model": model, "data": data, "subjects": W5, "shots": 5, "limit": 10}
    # The machine drifts by ~10% within minutes (single GEMM readings ranged 142-191 GFLOP/s).
    # lm-eval's 2-minute run averages that drift out; one 16-second engine run does not.  So the
    # GEMM rate and the engine are each sampled three times, in the order GEMM, engine, lm-eval,
    # GEMM, engine, GEMM, engine, and their medians are compared; every sample is printed.
    gemms, engines = [run("gemm")["gflops"]], [run("engine", **common)]
    theirs = run("lm_eval", batch_size=8, **common)
    gemms.append(run("gemm")["gflops"])
    engines.append(run("engine", **common))
    gemms.append(run("gemm")["gflops"])
    engines.append(run("engine", **common))
    gemm = sorted(gemms)[1]
    ours = sorted(engines, key=lambda r: r["seconds"])[1]
    walls = [r["seconds"] for r in engines]
    checks = [compare_lls(theirs["loglikelihoods"], r["loglikelihoods"]) for r in engines]
    same, delta = min(c[0] for c in checks), max(c[1] for c in checks)
    rate = ours["flops"] / ours["seconds"] / 1e9
    print(f"machine: {machine()}")
    print(
        f"fp32 GEMM rate (2048^3, same run): {gemm:.1f} GFLOP/s, the median of "
        f"{', '.join(f'{g:.1f}' for g in gemms)} (in run order)"
    )
    print(f"lm-eval hf batch 8: {theirs['seconds']:.1f} s, peak RSS {theirs['peak_rss'] / 1e9:.2f} GB")
    print(
        f"pytest-mmlu engine: {ours['seconds']:.1f} s, the median of "
        f"{', '.join(f'{t:.1f}' for t in walls)} s (in run order); "
        f"peak RSS {max(r['peak_rss'] for r in engines) / 1e9:.2f} GB (highest of the three; loading "
        f"{max(r['load_peak'] for r in engines) / 1e9:.2f}, evaluation "
        f"{max(r['eval_peak'] for r in engines) / 1e9:.2f}), "
        f"batches {ours['batch_sizes']}, {ours['tokens']} tokens"
    )
    print(
        f"speed-up: {theirs['seconds'] / ours['seconds']:.1f}x on the median "
        f"({theirs['seconds'] / max(walls):.1f}x on the slowest engine run); identical predictions "
        f"{same}/{len(theirs['loglikelihoods'])} (worst of the three); max |delta loglikelihood| {delta:.2e}"
    )
    print(
        f"achieved: {ours['flops'] / 1e12:.2f} TFLOP in {ours['seconds']:.1f} s = {rate:.1f} GFLOP/s "
        f"= {100 * rate / gemm:.0f}% of the GEMM rate (median over median)"
    )


def bench_budgets(model: str, data: str) -> None:
    print(f"machine: {machine()}")
    # W5 at the budgets; then 3 x 30 questions under budgets tight enough to bind.
    for limit, budgets in ((10, (1.0e9, 1.5e9, 3.0e9)), (30, (1.05 * 2**30, 1.15 * 2**30, 1.25 * 2**30))):
        for budget in map(int, budgets):
            label = f"{budget / 1e9:.1f} GB" if limit == 10 else f"{budget / 2**30:.2f} GiB"
            r = run("engine", model=model, data=data, subjects=W5, shots=5, limit=limit, budget=budget)
            if "error" in r:
                print(f"{limit}/subject, budget {label}: refused before running: {r['error']}")
                continue
            use = (r["eval_peak"] - r["baseline"]) / (budget - r["baseline"])
            sizes = r["batch_sizes"]
            print(
                f"{limit}/subject, budget {label}: peak {r['eval_peak'] / 1e9:.3f} GB "
                f"(<= budget: {r['eval_peak'] <= budget}); baseline {r['baseline'] / 1e9:.3f} GB; "
                f"headroom used {100 * use:.0f}%; {len(sizes)} batches, largest {max(sizes)}; "
                f"{r['seconds']:.1f} s"
            )


def bench_shots(model: str, data: str, *subjects: str) -> None:
    subjects = list(subjects) or W5
    print(f"machine: {machine()}")
    print(f"subjects: {', '.join(subjects)}, first 100 test questions each")
    # Two alternating rounds (0, 5, 0, 5): the machine drifts by ~10% within minutes.
    runs: dict[int, list[dict]] = {0: [], 5: []}
    for _ in range(2):
        for shots in (0, 5):
            r = run("engine", model=model, data=data, subjects=subjects, shots=shots, limit=100)
            runs[shots].append(r)
            print(
                f"{shots}-shot: {r['seconds']:.1f} s, eval peak {r['eval_peak'] / 1e9:.3f} GB, "
                f"{r['tokens']} tokens, {r['flops'] / 1e12:.2f} TFLOP "
                f"({r['flops'] / r['seconds'] / 1e9:.0f} GFLOP/s), accuracy {r['accuracy']:.3f}"
            )
    wall = {shots: sum(r["seconds"] for r in rs) for shots, rs in runs.items()}
    peak = {shots: max(r["eval_peak"] for r in rs) for shots, rs in runs.items()}
    rounds = ", ".join(f"{five['seconds'] / zero['seconds']:.2f}x" for zero, five in zip(runs[0], runs[5]))
    print(
        f"5-shot / 0-shot: wall {wall[5] / wall[0]:.2f}x (both rounds together; round by round "
        f"{rounds}), "
        f"peak memory {peak[5] / peak[0]:.2f}x, model FLOPs {runs[5][0]['flops'] / runs[0][0]['flops']:.2f}x"
    )


def worker_flops(args: dict) -> dict:
    from pytest_mmlu.marks import make_eval_spec
    from pytest_mmlu.mmlu.subjects import ALL_SUBJECTS

    evaluator = make_evaluator(args)
    return {
        subject: [flops_of(evaluator, make_eval_spec([subject], shots, args["limit"])) for shots in (0, 5)]
        for subject in ALL_SUBJECTS
    }


def bench_flops(model: str, data: str) -> None:
    """What 5-shot costs over 0-shot in model FLOPs, subject by subject: the floor of the wall
    ratio for an exact engine (5-shot adds attention from every token to the few-shot prefix)."""
    limit = 100
    flops = run("flops", model=model, data=data, limit=limit)
    print(f"first {limit} test questions of each subject; 5-shot / 0-shot model FLOPs:")
    for subject, (zero, five) in sorted(flops.items(), key=lambda kv: kv[1][1] / kv[1][0]):
        print(f"  {five / zero:.2f}x  {subject}")
    zero, five = (sum(f[i] for f in flops.values()) for i in (0, 1))
    print(
        f"all {len(flops)} subjects: {zero / 1e12:.1f} TFLOP 0-shot, {five / 1e12:.1f} TFLOP 5-shot, {five / zero:.2f}x"
    )
    typical = sorted(flops, key=lambda s: abs(flops[s][1] / flops[s][0] - five / zero))[:3]
    print(f"the 3 subjects nearest that ratio (typical MMLU, for `shots`): {' '.join(sorted(typical))}")


def bench_batches(model: str, data: str) -> None:
    print(f"machine: {machine()}")
    common = {"model": model, "data": data, "subjects": W5, "shots": 5, "limit": 10}
    base = run("engine", batch_size=1, **common)
    for bs in (4, 16, 32, 1):
        r = run("engine", batch_size=bs, **common)
        same, delta = compare_lls(base["loglikelihoods"], r["loglikelihoods"])
        print(
            f"batch {bs}{' (repeat)' if bs == 1 else ''}: identical predictions {same}/30, "
            f"max |delta| vs batch 1 {delta:.2e}, {r['seconds']:.1f} s"
        )


def bench_subjects57(model: str, data: str, limit: str = "20") -> None:
    """All 57 subjects x ``limit`` questions, 5-shot then 0-shot on the same questions: wall,
    peak, achieved share of the GEMM rate (GEMM sampled before, between and after)."""
    from pytest_mmlu.mmlu.subjects import ALL_SUBJECTS

    print(f"machine: {machine()}")
    common = {"model": model, "data": data, "subjects": list(ALL_SUBJECTS), "limit": int(limit)}
    gemms = [run("gemm")["gflops"]]
    five = run("engine", shots=5, **common)
    gemms.append(run("gemm")["gflops"])
    zero = run("engine", shots=0, **common)
    gemms.append(run("gemm")["gflops"])
    gemm = sorted(gemms)[1]
    print(f"fp32 GEMM rate (2048^3): median {gemm:.1f} GFLOP/s of {', '.join(f'{g:.1f}' for g in gemms)}")
    for shots, r in ((5, five), (0, zero)):
        rate = r["flops"] / r["seconds"] / 1e9
        print(
            f"{shots}-shot, {len(r['loglikelihoods'])} questions: wall {r['seconds']:.1f} s "
            f"(engine's own clock {r['engine_seconds']:.1f} s), peak RSS {r['peak_rss'] / 2**30:.2f} GiB "
            f"(evaluation {r['eval_peak'] / 2**30:.2f} GiB), {r['tokens']} tokens, "
            f"{r['flops'] / 1e12:.2f} TFLOP = {rate:.1f} GFLOP/s = {100 * rate / gemm:.0f}% of the GEMM rate, "
            f"accuracy {r['accuracy']:.3f}"
        )
    print(
        f"5-shot / 0-shot on the same questions: wall {five['seconds'] / zero['seconds']:.2f}x, "
        f"model FLOPs {five['flops'] / zero['flops']:.2f}x, "
        f"evaluation peak {five['eval_peak'] / zero['eval_peak']:.2f}x"
    )


WORKERS = {"gemm": worker_gemm, "lm_eval": worker_lm_eval, "engine": worker_engine, "flops": worker_flops}


def main() -> None:
    if sys.argv[1] == "_worker":
        sys.path.insert(0, str(ROOT))
        print(json.dumps(WORKERS[sys.argv[2]](json.loads(sys.argv[3]))))
        return
    benches = {
        "compare": bench_compare,
        "budgets": bench_budgets,
        "shots": bench_shots,
        "batches": bench_batches,
        "flops": bench_flops,
        "subjects57": bench_subjects57,
    }
    model, data = model_path(), data_path()
    print(
        f"$ python bench/w5_bench.py {' '.join(sys.argv[1:])}   ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})"
    )
    benches[sys.argv[1]](model, data, *sys.argv[2:])  # `shots`: its subjects; `subjects57`: the limit


if __name__ == "__main__":
    main()
