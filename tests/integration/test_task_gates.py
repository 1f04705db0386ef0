"""lm-eval tasks gated like MMLU (issue 19), end to end through pytest and the CLI: one verdict
on every path, as ``test_one_verdict.py`` proves for MMLU.

A matrix of task gate scenarios (a floor on a task's metric, per task of a group, a budget,
no-regression against a baseline and against the full model, a body evaluation) runs on
every path: one plain run; ``-n 2``; two CI shards and ``pytest-mmlu merge``; a second run
served from the result cache; a baseline from our report and from the lm-eval samples the
baseline run wrote (``--mmlu-report-lm-eval``); ``pytest-mmlu compare``. Each path must give
each test the same verdict. The baseline is the run of the last release, which got every
document of ``arc_style`` right (its files say so, as lm-eval would have written them).
"""

from __future__ import annotations

import json

import pytest
from factories import compared_verdicts, make_baselines, run_cli, verdicts_of
from task_folders import write_task_folder

pytestmark = pytest.mark.slow

ARC = '@pytest.mark.lm_eval_task("arc_style", shots=2, limit=8)'
SUITE = f"""
import pytest

{ARC}
@pytest.mark.mmlu_accuracy_floor(0.0)
@pytest.mark.mmlu_memory_budget("64 GiB")
def test_floor_pass(mmlu_result):
    assert mmlu_result.task["metric"] == "acc"

@pytest.mark.lm_eval_task("arc_style", shots=2, limit=8, metric="acc_norm")
@pytest.mark.mmlu_accuracy_floor(0.99)
def test_floor_fail(mmlu_result):
    pass

@pytest.mark.lm_eval_task("style_group", shots=1, limit=4)
@pytest.mark.mmlu_accuracy_floor(per_subject={{"arc_style": 0.0, "hellaswag_style": 0.0}})
def test_group_floor_pass(mmlu_result):
    assert set(mmlu_result.per_subject) <= {{"arc_style", "hellaswag_style", "style_group"}}

@pytest.mark.lm_eval_task("style_group", shots=1, limit=4)
@pytest.mark.mmlu_accuracy_floor(per_subject={{"hellaswag_style": 0.99}})
def test_group_floor_fail(mmlu_result):
    pass

@pytest.mark.lm_eval_task("truthfulqa_mc2_style", limit=6)
@pytest.mark.mmlu_memory_budget("1 MiB")
def test_budget_fail(mmlu_result):
    pass

@pytest.mark.lm_eval_task("truthfulqa_mc2_style", limit=6)
@pytest.mark.mmlu_no_regression(max_drop=1.0)
def test_nr_pass(mmlu_result):
    pass

{ARC}
@pytest.mark.mmlu_no_regression(max_drop=0.02, alpha=0.1)
def test_nr_fail(mmlu_result):
    pass

@pytest.mark.lm_eval_task("winogrande_style", shots=1, limit=4)
@pytest.mark.mmlu_no_regression()
def test_nr_missing(mmlu_result):
    pass

@pytest.mark.mmlu_variant(quantization="int8")
{ARC}
@pytest.mark.mmlu_no_regression(against="full", max_drop=1.0)
def test_full_pass(mmlu_result):
    pass

@pytest.mark.mmlu_variant(quantization="int8")
@pytest.mark.lm_eval_task("hellaswag_style", shots=1, limit=1)
@pytest.mark.mmlu_no_regression(against="full", max_drop=1.0)
def test_full_one_document(mmlu_result):  # in two shards, one holds none of it
    pass

@pytest.mark.mmlu_accuracy_floor(0.0)
def test_evaluated_in_body(mmlu):
    mmlu.evaluate_task("hellaswag_style", shots=1, limit=4)
"""

# What every path must conclude: (status, failing gates).
EXPECTED = {
    "test_floor_pass": ("passed", ()),
    "test_floor_fail": ("failed", ("floor",)),
    "test_group_floor_pass": ("passed", ()),
    "test_group_floor_fail": ("failed", ("floor",)),
    "test_budget_fail": ("failed", ("budget",)),
    "test_nr_pass": ("passed", ()),
    "test_nr_fail": ("failed", ("regression",)),
    "test_nr_missing": ("failed", ("missing-baseline",)),
    "test_full_pass": ("passed", ()),
    "test_full_one_document": ("passed", ()),
    "test_evaluated_in_body": ("passed", ()),
}

GROUP = """group: style_group
task: [arc_style, hellaswag_style]
aggregate_metric_list:
  - metric: acc
    weight_by_size: true
"""


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    from pytest_mmlu.tasks.registry import load_task_set, task_manager

    found = write_task_folder(tmp_path_factory.mktemp("tasks"), docs=8)
    (found / "style_group.yaml").write_text(GROUP, encoding="utf-8")
    # Loaded once here, lm-eval's and datasets' modules stay imported across pytester's runs
    # (datasets registers its pyarrow types once per process).
    load_task_set(task_manager(str(found), defaults=False), "style_group", 1)
    return found


def all_right(baseline, lm_eval_dir) -> None:
    """The last release's files as if it had got every arc_style document right: the gold
    choice's log-likelihood 0, the others -100, its metrics 1 (what lm-eval computes from them)."""
    report = json.loads(baseline.read_text())
    for test in report["tests"]:
        if test["nodeid"].endswith("test_nr_fail"):
            for ev in test["evaluations"]:
                for q in ev["questions"]:
                    q["loglikelihoods"] = [0.0 if i == q["target"] else -100.0 for i in range(len(q["loglikelihoods"]))]
                    q["prediction"], q["score"] = q["target"], 1.0
    baseline.write_text(json.dumps(report))
    (samples,) = lm_eval_dir.rglob("samples_arc_style_*.jsonl")
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    for row in rows:
        gold = "ABCD".index(row["doc"]["answerKey"])
        row["filtered_resps"] = [["0.0" if i == gold else "-100.0", "False"] for i in range(len(row["filtered_resps"]))]
        row["resps"] = [[pair] for pair in row["filtered_resps"]]
        row["acc"] = row["acc_norm"] = 1.0
    samples.write_text("".join(json.dumps(row) + "\n" for row in rows))


def test_every_task_gate_gives_the_same_verdict_on_every_path(pytester, tiny_model_dir, folder):
    def pytest_run(*extra):
        args = (f"--mmlu-model={tiny_model_dir}", f"--mmlu-include-path={folder}", "-p", "no:cacheprovider", *extra)
        return pytester.runpytest_inprocess(*args)

    path = pytester.path
    pytester.makepyfile(test_tasks=SUITE)
    baseline, lm_eval = make_baselines(pytest_run, path)
    all_right(baseline, lm_eval)

    paths: dict[str, dict[str, tuple]] = {}
    cache = [f"--mmlu-cache-dir={path / 'cache'}", f"--mmlu-baseline={baseline}"]
    pytest_run(*cache, f"--mmlu-report={path / 'plain.json'}")
    paths["plain"] = verdicts_of(path / "plain.json")
    pytest_run(*cache, f"--mmlu-report={path / 'cached.json'}")
    cached = json.loads((path / "cached.json").read_text())
    assert sum(e.get("from_cache", False) for t in cached["tests"] for e in t["evaluations"]) >= 9
    paths["from the cache"] = verdicts_of(path / "cached.json")

    pytest_run("--mmlu-no-cache", f"--mmlu-baseline={baseline}", f"--mmlu-report={path / 'xdist.json'}", "-n", "2")
    paths["xdist -n 2"] = verdicts_of(path / "xdist.json")

    for i in (1, 2):
        pytest_run("--mmlu-no-cache", "--mmlu-shard", f"{i}/2", f"--mmlu-report={path / f'shard-{i}.json'}")
    merged = run_cli(
        "merge",
        path / "shard-1.json",
        path / "shard-2.json",
        "--baseline",
        baseline,
        "-o",
        path / "merged.json",
        "--lm-eval",
        path / "merged-lm-eval",
    )
    assert merged.returncode == 1, merged.stdout + merged.stderr
    paths["2 shards + merge"] = verdicts_of(path / "merged.json")
    # merge writes the whole as lm-eval files: every task evaluated, each document once
    written = {p.name.split("_2026")[0].split("_20")[0] for p in (path / "merged-lm-eval").rglob("samples_*.jsonl")}
    assert {"samples_arc_style", "samples_hellaswag_style", "samples_truthfulqa_mc2_style"} <= written

    pytest_run("--mmlu-no-cache", f"--mmlu-baseline={lm_eval}", f"--mmlu-report={path / 'lm-eval.json'}")
    paths["lm-eval samples baseline"] = verdicts_of(path / "lm-eval.json")

    compared = run_cli("compare", baseline, path / "plain.json")
    paths["compare"] = compared_verdicts(compared.stdout)

    for name, verdicts in paths.items():
        assert verdicts == EXPECTED, (
            name,
            {k: (v, EXPECTED.get(k)) for k, v in verdicts.items() if EXPECTED.get(k) != v},
        )


CONFUSION_SUITE = """
import pytest

@pytest.mark.lm_eval_task("arc_style", shots=1, limit=4, metric={metric!r})
@pytest.mark.mmlu_no_regression(max_drop=1.0)
def test_gate(mmlu_result):
    pass
"""


def test_a_task_evaluation_that_differs_in_its_task_is_never_served_or_compared_as_the_old(
    pytester, tiny_model_dir, folder, tmp_path
):
    """The identity's ``task`` changed alone, end to end: another metric, another version of the
    task (its YAML's metadata: the same prompts) is a cache miss and no baseline entry, saying
    which part differs."""
    import shutil

    tasks = shutil.copytree(folder, tmp_path / "tasks")
    cache, baseline = tmp_path / "cache", tmp_path / "baseline.json"

    def run(metric="acc", *extra):
        pytester.makepyfile(test_gate=CONFUSION_SUITE.format(metric=metric))
        args = (f"--mmlu-model={tiny_model_dir}", f"--mmlu-include-path={tasks}", f"--mmlu-cache-dir={cache}")
        result = pytester.runpytest_inprocess(*args, f"--mmlu-baseline={baseline}", "-p", "no:cacheprovider", *extra)
        report = json.loads((pytester.path / "r.json").read_text()) if (pytester.path / "r.json").exists() else None
        return result, report

    run("acc", "--mmlu-update-baseline")[0].assert_outcomes(passed=1)
    result, report = run("acc", f"--mmlu-report={pytester.path / 'r.json'}")
    result.assert_outcomes(passed=1)
    assert report["tests"][0]["evaluations"][0]["from_cache"]  # the same evaluation: served
    result, report = run("acc_norm", f"--mmlu-report={pytester.path / 'r.json'}")
    result.assert_outcomes(failed=1)
    assert not report["tests"][0]["evaluations"][0]["from_cache"]
    result.stdout.fnmatch_lines(["*another lm-eval task (metric acc in baseline, metric acc_norm in this run)*"])
    config = json.loads((tasks / "arc_style.yaml").read_text())
    (tasks / "arc_style.yaml").write_text(json.dumps({**config, "metadata": {"version": 99.0}}))
    result, report = run("acc", f"--mmlu-report={pytester.path / 'r.json'}")
    result.assert_outcomes(failed=1)
    assert not report["tests"][0]["evaluations"][0]["from_cache"]
    result.stdout.fnmatch_lines(["*another lm-eval task (versions {'arc_style': '1.0'}*99.0*"])
