"""Any lm-eval multiple-choice task through our engine (issue 19): lm-eval's own requests and
metrics, our scores; the same per-document metrics and log-likelihoods as lm-eval's hf
backend on SmolLM2, and the float64 truth on the shared-prefix path.

The task folder (tests/task_folders.py) holds one task of each shape, each including
lm-eval's registry YAML (ARC-Easy, HellaSwag, Winogrande, TruthfulQA-mc2) over local data.
"""

from __future__ import annotations

import json
import math

import pytest
from factories import real_mmlu_zip
from task_folders import SHAPES, write_task_folder
from truth import truth_loglikelihoods

pytestmark = pytest.mark.slow

DOCS = 4
# Few-shot counts as a release would run them; TruthfulQA-mc2's YAML fixes 0 (lm-eval keeps it).
SHOTS = {"arc_style": 5, "hellaswag_style": 3, "winogrande_style": 3, "truthfulqa_mc2_style": 5}
LL_TOLERANCE = 1e-4  # fp32, as for MMLU


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_task_folder(tmp_path_factory.mktemp("lm-eval-tasks") / "tasks", docs=DOCS)


@pytest.fixture(scope="module")
def loaded(smollm2_dir):
    from pytest_mmlu.models.load import load_model
    from pytest_mmlu.settings import Settings

    return load_model(Settings(model=str(smollm2_dir)))


@pytest.fixture(scope="module")
def hf(smollm2_dir):
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=str(smollm2_dir), dtype="float32", batch_size=4, device="cpu")


def ours(loaded, folder, name, shots, limit=DOCS):
    from pytest_mmlu.tasks.evaluation import TaskEvaluator
    from pytest_mmlu.tasks.registry import load_task_set, task_manager

    tasks = load_task_set(task_manager(str(folder), defaults=False), name, shots)
    return TaskEvaluator(loaded).evaluate(tasks, limit=limit)


def theirs(hf, folder, name, shots, limit=DOCS):
    from lm_eval import simple_evaluate

    from pytest_mmlu.tasks.registry import task_manager

    return simple_evaluate(
        model=hf,
        tasks=[name],
        task_manager=task_manager(str(folder), defaults=False),
        num_fewshot=shots,
        limit=limit,
        log_samples=True,
        bootstrap_iters=0,
    )


@pytest.mark.parametrize("name", list(SHAPES))
def test_each_task_shape_equals_lm_eval_hf_on_smollm2(name, loaded, hf, folder):
    got = ours(loaded, folder, name, SHOTS[name])
    want = theirs(hf, folder, name, SHOTS[name])
    samples = want["samples"][name]
    assert [d.doc_id for d in got.docs] == [s["doc_id"] for s in samples]
    for doc, sample in zip(got.docs, samples):
        lm_eval_lls = [float(r[0][0]) for r in sample["resps"]]
        assert len(doc.loglikelihoods) == len(lm_eval_lls), doc.doc_id
        assert max(abs(a - b) for a, b in zip(doc.loglikelihoods, lm_eval_lls)) <= LL_TOLERANCE, doc.doc_id
        assert doc.is_greedy == tuple(bool(r[0][1]) for r in sample["resps"]), doc.doc_id
        assert set(doc.metrics) == set(sample["metrics"]), doc.doc_id
        for metric in doc.metrics:
            # 0/1 metrics (acc, acc_norm) exactly; TruthfulQA's probability mass as its inputs allow
            assert math.isclose(doc.metrics[metric], float(sample[metric]), abs_tol=1e-4), (doc.doc_id, metric)
    reported = {key.split(",")[0] for key in want["results"][name] if key.endswith(",none") and "_stderr" not in key}
    assert set(got.metrics[name]) == reported
    for metric, value in got.metrics[name].items():
        assert math.isclose(value, float(want["results"][name][f"{metric},none"]), abs_tol=1e-4), metric
    assert got.shots[name] == want["n-shot"][name]
    if name == "truthfulqa_mc2_style":
        assert got.shots[name] == 0  # its YAML's num_fewshot: 0 wins over the 5 asked, as in lm-eval


@pytest.mark.parametrize("name", ["arc_style", "hellaswag_style", "winogrande_style"])
def test_task_scores_equal_the_float64_truth_with_shared_prefixes(name, loaded, folder):
    """Few-shot examples drawn per document still share each question across its choices:
    the prefix tree finds it, and every log-likelihood stays at the truth."""
    from pytest_mmlu.tasks.evaluation import TaskEvaluator
    from pytest_mmlu.tasks.prepared import build_instances
    from pytest_mmlu.tasks.registry import load_task_set, task_manager

    evaluator = TaskEvaluator(loaded)
    tasks = load_task_set(task_manager(str(folder), defaults=False), name, SHOTS[name])
    result = evaluator.evaluate(tasks, limit=2)  # the float64 forward takes ~1 s a row
    assert result.engine_mode == "prefix"
    assert result.prefix_tokens_saved > 0
    built = build_instances(tasks, 2)
    requests = evaluator.token_requests([inst for insts in built.values() for inst in insts])
    truth = truth_loglikelihoods(loaded.model, requests, evaluator.max_length)
    got = [ll for doc in result.docs for ll in doc.loglikelihoods]
    assert len(got) == len(truth)
    errors = [abs(a - b) for a, b in zip(got, truth)]
    # A continuation's log-likelihood sums one fp32 log-probability per token: MMLU's 1e-4 up
    # to 4 tokens, 2.5e-5 a token beyond (HellaSwag's endings are 10-20 tokens; measured
    # errors: up to 1.2e-5 a token).
    assert all(e <= LL_TOLERANCE * max(1, len(r.continuation) / 4) for e, r in zip(errors, requests))


def test_registry_mmlu_tasks_predict_as_our_mmlu_path(loaded):
    """lm-eval's own mmlu_<subject> tasks over the local data, through the task path, give
    the MMLU path's log-likelihoods and predictions."""
    from pytest_mmlu.lm_eval_adapter import mmlu_tasks
    from pytest_mmlu.marks import make_eval_spec
    from pytest_mmlu.mmlu.data import MmluData
    from pytest_mmlu.mmlu.evaluation import Evaluator
    from pytest_mmlu.tasks.evaluation import TaskEvaluator
    from pytest_mmlu.tasks.registry import task_set

    subjects = ["anatomy", "college_physics"]
    data = MmluData(str(real_mmlu_zip()))
    mmlu = Evaluator(loaded, data).evaluate(make_eval_spec(subjects, 5, 5))
    tasks = task_set("mmlu", mmlu_tasks(data, subjects), shots=5)
    result = TaskEvaluator(loaded).evaluate(tasks, limit=5)
    by_key = {(d.task.removeprefix("mmlu_"), d.doc_id): d for d in result.docs}
    assert len(by_key) == len(mmlu.questions) == 10
    for q in mmlu.questions:
        doc = by_key[(q.subject, q.index)]
        assert max(abs(a - b) for a, b in zip(doc.loglikelihoods, q.loglikelihoods)) <= LL_TOLERANCE
        assert doc.metrics["acc"] == float(q.correct)


def test_generative_tasks_are_refused_naming_their_output_type():
    from pytest_mmlu.tasks.registry import TaskError, load_task_set, task_manager

    registry = task_manager()  # lm-eval's whole registry, indexed once (seconds)
    for name in ("gsm8k", "mmlu_pro"):  # a task, and a group of them
        with pytest.raises(TaskError) as refused:
            load_task_set(registry, name)
        message = str(refused.value)
        assert "\n" not in message
        assert "'generate_until'" in message and "log-likelihood tasks only" in message
        assert message.startswith(f"lm-eval task {name!r}" if name == "gsm8k" else "lm-eval task 'mmlu_pro_")


def test_pair_metrics_and_a_fractional_limit_equal_lm_eval(tiny_model_dir, folder, tmp_path):
    """Metrics whose per-document value is a pair (mcc: gold, prediction; brier_score), aggregated by
    lm-eval's own functions, and ``limit`` as a share of the documents; on a tiny model."""
    import json

    from lm_eval.models.huggingface import HFLM

    from pytest_mmlu.models.load import load_model
    from pytest_mmlu.settings import Settings

    metrics = ["acc", "acc_norm", "mcc", "brier_score"]  # f1: lm-eval takes it binary only
    config = {
        "include": str(folder / "arc_style.yaml"),
        "task": "arc_pairs",
        "metric_list": [{"metric": m, "higher_is_better": True} for m in metrics],
    }
    (tmp_path / "arc_pairs.yaml").write_text(json.dumps(config), encoding="utf-8")
    got = ours(load_model(Settings(model=str(tiny_model_dir))), tmp_path, "arc_pairs", 2, limit=0.5)
    hf = HFLM(pretrained=str(tiny_model_dir), dtype="float32", batch_size=4, device="cpu")
    want = theirs(hf, tmp_path, "arc_pairs", 2, limit=0.5)
    assert len(got.docs) == len(want["samples"]["arc_pairs"]) == math.ceil(DOCS * 0.5)
    assert set(got.metrics["arc_pairs"]) == set(metrics)
    for metric in metrics:  # brier_score is continuous: as its log-likelihoods allow
        want_value = want["results"]["arc_pairs"][f"{metric},none"]
        assert math.isclose(got.metrics["arc_pairs"][metric], want_value, abs_tol=1e-6), metric


@pytest.mark.parametrize("name", ["arc_style", "truthfulqa_mc2_style"])
def test_task_samples_written_as_lm_eval_writes_them_and_read_back_as_a_baseline(name, loaded, hf, folder, tmp_path):
    """Our lm-eval files of a task evaluation hold lm-eval's own documents, prompts, targets and
    hashes; lm-eval's ``--log_samples`` files of the same task answer as its baseline, every
    document and prompt checked, its metric recomputed from its log-likelihoods."""
    from lm_eval.loggers import EvaluationTracker

    from pytest_mmlu.markers import TaskSpec
    from pytest_mmlu.reports.lm_eval_read import LmEvalRun
    from pytest_mmlu.reports.lm_eval_tasks import task_baseline_entry
    from pytest_mmlu.reports.lm_eval_write import write_lm_eval
    from pytest_mmlu.tasks.evaluation import TaskEvaluator
    from pytest_mmlu.tasks.prepared import prepare
    from pytest_mmlu.tasks.registry import task_manager

    prepared = prepare(task_manager(str(folder), defaults=False), TaskSpec(name, SHOTS[name], DOCS))
    result = TaskEvaluator(loaded).evaluate_prepared(prepared)
    entry = {**result.to_dict(), "identity": {"dtype": "float32", "data": prepared.fingerprint}}
    report = {"model": {"model": "smollm2"}, "tests": [{"nodeid": "t", "evaluations": [entry]}]}
    write_lm_eval(tmp_path / "ours", report, None, prepare=lambda ev: prepared)
    want = theirs(hf, folder, name, SHOTS[name])
    tracker = EvaluationTracker(output_path=str(tmp_path / "theirs"))
    tracker.save_results_aggregated(results={k: v for k, v in want.items() if k != "samples"}, samples=want["samples"])
    tracker.save_results_samples(task_name=name, samples=want["samples"][name])
    (mine,) = (tmp_path / "ours").rglob(f"samples_{name}_*.jsonl")
    (real,) = (tmp_path / "theirs").rglob(f"samples_{name}_*.jsonl")
    mine_rows = [json.loads(line) for line in mine.read_text().splitlines()]
    real_rows = [json.loads(line) for line in real.read_text().splitlines()]
    assert len(mine_rows) == len(real_rows) == DOCS
    for a, b in zip(mine_rows, real_rows):
        same = ("doc_id", "doc", "target", "arguments", "filter", "metrics", "doc_hash", "prompt_hash", "target_hash")
        assert {k: a[k] for k in same} == {k: b[k] for k in same}
        for metric in a["metrics"]:
            assert math.isclose(a[metric], b[metric], abs_tol=1e-4), metric
    baseline = task_baseline_entry(LmEvalRun.load(tmp_path / "theirs"), entry, lambda ev: prepared)
    assert "refused" not in baseline, baseline
    got = {(q["subject"], q["index"]): q["score"] for q in baseline["questions"]}
    assert got.keys() == {(q.subject, q.index) for q in result.questions}
    assert all(math.isclose(got[q.subject, q.index], q.score, abs_tol=1e-4) for q in result.questions)
    # a row of another filter is not the task's answer; a row short of responses is refused
    rows = [json.loads(line) for line in real.read_text().splitlines()]
    other_filter = {**rows[0], "filter": "maj@2", "filtered_resps": [["0.0", "True"]] * len(rows[0]["filtered_resps"])}
    real.write_text("".join(json.dumps(row) + "\n" for row in [*rows, other_filter]))
    assert task_baseline_entry(LmEvalRun.load(tmp_path / "theirs"), entry, lambda ev: prepared) == baseline
    short = {**rows[0], "filtered_resps": rows[0]["filtered_resps"][:-1]}
    real.write_text("".join(json.dumps(row) + "\n" for row in [short, *rows[1:]]))
    refused = task_baseline_entry(LmEvalRun.load(tmp_path / "theirs"), entry, lambda ev: prepared)["refused"]
    assert refused.endswith(
        f"holds {len(short['filtered_resps'])} responses for its {len(rows[0]['filtered_resps'])} requests"
    )
    real.write_text("".join(json.dumps(row) + "\n" for row in rows))
    # an evaluation with another few-shot count is refused, naming it
    other = prepare(task_manager(str(folder), defaults=False), TaskSpec(name, SHOTS[name] + 1, DOCS))
    if other.shots[name] != prepared.shots[name]:
        other_entry = {
            **TaskEvaluator(loaded).evaluate_prepared(other).to_dict(),
            "identity": {"dtype": "float32", "data": other.fingerprint},
        }
        run = LmEvalRun.load(tmp_path / "theirs")
        refused = task_baseline_entry(run, other_entry, lambda ev: other)["refused"]
        assert refused == f"{name} was run {SHOTS[name]}-shot, this evaluation is {SHOTS[name] + 1}-shot"
