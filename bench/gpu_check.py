"""The prepared GPU check (issue 10), run by ``bash bench/gpu_check.sh``: one file of results.

    python bench/gpu_check.py big  [--smoke]   # a 7B-shaped Qwen2 5-shot under a 24 GiB budget:
                                               # our batch vs the largest lm-eval batch that fits
    python bench/gpu_check.py w5               # W5 on the GPU, lm-eval hf batch 8 side by side
    python bench/gpu_check.py random-smollm2 SRC DST  # SmolLM2's shape, random weights (W5's model)

``--smoke`` runs the same code on CPU with a 2-layer model and a small budget: CI proves the
script's logic without a GPU (tests/agreement/test_gpu_check.py).  Output: one JSON line per section
appended to $GPU_CHECK_OUT (default bench/gpu_check_results.jsonl) and a readable line on stdout.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

# A Qwen2-7B-shaped config: 28 layers, hidden 3584, 28 query / 4 key-value heads, vocab 151,936.
BIG = dict(
    num_hidden_layers=28,
    hidden_size=3584,
    intermediate_size=18944,
    num_attention_heads=28,
    num_key_value_heads=4,
    vocab_size=151936,
    max_position_embeddings=32768,
    tie_word_embeddings=False,
)
SMOKE = dict(
    num_hidden_layers=2,
    hidden_size=64,
    intermediate_size=128,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=151936,
    max_position_embeddings=32768,
    tie_word_embeddings=False,
)
BUDGET = 24 * 2**30
SUBJECTS = ["high_school_us_history", "college_medicine", "abstract_algebra"]  # long, medium, short rows
LM_EVAL_BATCHES = [1, 2, 4, 8, 16, 32, 64]


def emit(section: str, **fields) -> None:
    out = Path(os.environ.get("GPU_CHECK_OUT", ROOT / "bench" / "gpu_check_results.jsonl"))
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a") as f:
        f.write(json.dumps({"section": section, **fields}) + "\n")
    print(f"[{section}] " + ", ".join(f"{k}={v}" for k, v in fields.items()), flush=True)


def device_facts() -> dict:
    import torch

    if not torch.cuda.is_available():
        return {"device": "cpu", "torch": torch.__version__}
    props = torch.cuda.get_device_properties(0)
    return {
        "device": props.name,
        "memory_gib": round(props.total_memory / 2**30, 1),
        "capability": f"{props.major}.{props.minor}",
        "torch": torch.__version__,
    }


def build_model(shape: dict, device: str, dtype):
    """Random weights in the target dtype, created on the device (no 15 GB checkpoint on disk)."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    torch.manual_seed(0)
    config = Qwen2Config(**shape)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa")
    return model.eval()


def loaded_model(model, tokenizer, device: str, dtype: str):
    """The model as the plugin's loader would hand it over (it was built in memory, not loaded)."""
    from pytest_mmlu.models.load import LoadedModel, weight_bytes

    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        name="random 7B-shaped Qwen2",
        revision=None,
        device=device,
        dtype=dtype,
        load_seconds=0.0,
        weight_bytes=weight_bytes(model),
        commit=None,
    )


def engine_run(loaded, data, limit: int, budget: int) -> dict:
    from w5_bench import flops_of

    from pytest_mmlu.marks import make_eval_spec
    from pytest_mmlu.mmlu.evaluation import Evaluator

    evaluator = Evaluator(loaded, data)
    spec = make_eval_spec(SUBJECTS, 5, limit)
    evaluator.evaluate(spec, budget)  # warm-up: compiles the fused attention kernels
    result = evaluator.evaluate(spec, budget)
    flops = flops_of(evaluator, spec)
    return {
        "questions": len(result.questions),
        "seconds": round(result.seconds, 2),
        "batch_sizes": result.batch_sizes,
        "largest_batch": max(result.batch_sizes),
        "peak_gib": round(result.peak_memory_bytes / 2**30, 2),
        "budget_gib": budget / 2**30,
        "tflops_per_s": round(flops / result.seconds / 1e12, 1),
        "tokens": result.tokens,
        "lls": {f"{q.subject}/{q.index}": list(q.loglikelihoods) for q in result.questions},
    }


def lm_eval_batch(model, tokenizer, data, batch: int, device: str) -> dict:
    """lm-eval's hf backend at one batch size on the longest rows (it sorts longest first), so its
    first batch is its largest: the device's peak for this batch size, or the OOM."""
    import torch
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    from pytest_mmlu.lm_eval_adapter import bare_task_manager, mmlu_tasks

    tasks = list(mmlu_tasks(data, SUBJECTS[:1]).values())
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch, device=device)
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    try:
        simple_evaluate(
            task_manager=bare_task_manager(),
            model=lm,
            tasks=tasks,
            num_fewshot=5,
            limit=max(1, batch // 4 + 1),
            bootstrap_iters=0,
        )
    except torch.OutOfMemoryError:
        return {"batch": batch, "oom": True}
    peak = torch.cuda.max_memory_allocated() if device.startswith("cuda") else None
    return {
        "batch": batch,
        "oom": False,
        "seconds": round(time.perf_counter() - start, 1),
        "peak_gib": None if peak is None else round(peak / 2**30, 2),
    }


def check_big(smoke: bool) -> None:
    import torch
    from transformers import AutoTokenizer
    from w5_bench import data_path, model_path

    from pytest_mmlu.mmlu.data import MmluData

    device = "cpu" if smoke else "cuda"
    dtype = torch.float32 if smoke else torch.bfloat16
    budget = (2 * 2**30) if smoke else BUDGET
    emit("machine", **device_facts())
    tokenizer = AutoTokenizer.from_pretrained(model_path())  # SmolLM2's ids fit Qwen2's vocab
    data = MmluData(data_path())
    model = build_model(SMOKE if smoke else BIG, device, dtype)
    loaded = loaded_model(model, tokenizer, device, str(dtype).removeprefix("torch."))
    emit(
        "big_model",
        layers=model.config.num_hidden_layers,
        hidden=model.config.hidden_size,
        params_b=round(sum(p.numel() for p in model.parameters()) / 1e9, 2),
        weight_gib=round(loaded.weight_bytes / 2**30, 2),
    )
    ours = engine_run(loaded, data, 2 if smoke else 40, budget)
    ours.pop("lls")
    emit("big_engine", **ours)
    fits = None
    for batch in LM_EVAL_BATCHES[:1] if smoke else LM_EVAL_BATCHES:
        r = lm_eval_batch(model, tokenizer, data, batch, device)
        within = not r["oom"] and (r["peak_gib"] is None or r["peak_gib"] * 2**30 <= budget)
        emit("big_lm_eval", within_budget=within, **r)
        if not within:
            break
        fits = batch
    emit(
        "big_summary",
        engine_largest_batch=ours["largest_batch"],
        engine_peak_gib=ours["peak_gib"],
        lm_eval_largest_batch_within_budget=fits,
        budget_gib=budget / 2**30,
        engine_tflops_per_s=ours["tflops_per_s"],
    )


def check_w5() -> None:
    """W5 on the GPU in fp32, lm-eval hf batch 8 beside it: speed-up, predictions, |delta|."""
    from w5_bench import W5, compare_lls, data_path, model_path, run

    common = {
        "model": model_path(),
        "data": data_path(),
        "subjects": W5,
        "shots": 5,
        "limit": 10,
        "device": "cuda",
        "dtype": "float32",
    }
    ours = [run("engine", **common) for _ in range(2)][-1]  # the second: kernels compiled
    theirs = run("lm_eval", batch_size=8, **common)
    same, delta = compare_lls(theirs["loglikelihoods"], ours["loglikelihoods"])
    emit(
        "w5_gpu",
        engine_seconds=round(ours["seconds"], 2),
        lm_eval_seconds=round(theirs["seconds"], 2),
        speedup=round(theirs["seconds"] / ours["seconds"], 1),
        same_predictions=f"{same}/30",
        max_abs_delta=f"{delta:.2e}",
        engine_batches=ours["batch_sizes"],
    )


def random_smollm2(source: str, folder: str) -> None:
    """SmolLM2-135M's config and tokenizer (bench/gpu_prepare.sh) with seeded random weights: its
    shape and FLOPs, where its 517 MB of weights cannot travel to the device machine."""
    import shutil

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(source), dtype=torch.float32)
    model.save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"):
        if (Path(source) / name).exists():
            shutil.copy(Path(source) / name, Path(folder) / name)
    emit("w5_model", folder=folder, note="SmolLM2-135M config and tokenizer, seeded random weights")


if __name__ == "__main__":
    what = sys.argv[1]
    if what == "random-smollm2":
        random_smollm2(sys.argv[2], sys.argv[3])
    elif what == "big":
        check_big("--smoke" in sys.argv)
    elif what == "w5":
        check_w5()
    else:
        raise SystemExit(f"unknown check {what!r}: big or w5")
