"""The pieces that let an lm-eval task evaluation be judged like MMLU (issue 19): its documents'
metric values as questions, groups weighed as lm-eval weighs them, the paired test on values,
the task in the identity, and what a session refuses before loading anything."""

from __future__ import annotations

import pytest
from factories import made_up_identity, make_result

from pytest_mmlu.gates import floors
from pytest_mmlu.identity import BASELINE, CACHE, difference, of_entry
from pytest_mmlu.markers import Floor, TaskSpec
from pytest_mmlu.mmlu.results import EvaluationResult, QuestionResult
from pytest_mmlu.stats import compare_paired


def doc(task: str, index: int, score: float) -> QuestionResult:
    return QuestionResult.scored(task, index, 0, (-1.0, -2.0), (True, False), score=score)


def group_result(weight_by_size: bool) -> EvaluationResult:
    """A group of a 2-document task at 1.0 and a 6-document task at 0.0."""
    questions = [doc("small", i, 1.0) for i in range(2)] + [doc("large", i, 0.0) for i in range(6)]
    task = {
        "name": "pair",
        "metric": "acc",
        "groups": {"pair": ["small", "large"]},
        "weight_by_size": {"pair": weight_by_size},
    }
    return make_result(questions, shots=None, label="pair", task=task)


def test_a_group_is_weighed_as_lm_eval_weighs_it():
    assert group_result(True).accuracy == pytest.approx(2 / 8)  # pooled over documents
    assert group_result(False).accuracy == pytest.approx(0.5)  # the mean of its tasks' means
    assert set(group_result(True).per_subject) == {"small", "large", "pair"}  # the group: a floor may name it
    assert group_result(True).per_category == {}


def test_a_document_counts_for_its_metric_value_not_its_argmax():
    # acc_norm: lm-eval's value may disagree with the raw argmax; the value is what counts
    result = make_result([doc("t", 0, 0.0), doc("t", 1, 0.25)], task={"name": "t", "metric": "acc_norm"})
    assert result.questions[0].correct and result.accuracy == pytest.approx(0.125)
    verdicts = floors(result, Floor(0.5, {"t": 0.1}))
    assert [v.line.split(" < ")[0] for v in verdicts] == ["lm-eval acc_norm 0.125"]
    assert (
        "task's shots"
        in floors(make_result([doc("t", 0, 0.0)], shots=None, task={"name": "t", "metric": "acc"}), Floor(0.5))[0].line
    )
    # a report entry keeps the values, and reads back the same
    again = EvaluationResult.from_dict(result.to_dict())
    assert [q.score for q in again.questions] == [0.0, 0.25] and again.task == result.task


def test_the_paired_test_of_values_is_the_sign_test_and_ignores_rounding():
    c = compare_paired([0.9, 0.8, 0.5, 0.3], [0.9 + 1e-9, 0.1, 0.6, 0.3])
    assert (c.lost, c.gained) == (1, 1)
    assert c.drop == pytest.approx((0.8 - 0.1 - 0.1) / 4)
    c = compare_paired([1.0] * 6, [0.0] * 6)
    assert c.regressed(0.02, 0.05) and c.p_worse == pytest.approx(1 / 64)
    # 0/1 values are McNemar's test, as before
    assert compare_paired([True, True, False], [False, True, True]).lost == 1


def test_the_task_is_part_of_the_identity_and_old_entries_are_mmlu():
    questions = [("anatomy", 0), ("anatomy", 1)]
    mmlu = made_up_identity(questions, 5)
    assert mmlu["task"] is None
    old = {k: v for k, v in mmlu.items() if k != "task"}  # recorded before tasks were gated
    assert difference(of_entry({"identity": old}), of_entry({"identity": mmlu}), CACHE) is None
    task = {"name": "arc", "metric": "acc", "versions": {"arc": "1.0"}, "configs": {"arc": "ab"}, "include_path": None}
    arc = made_up_identity([("arc", 0)], {"arc": 5}, task=task)
    other = made_up_identity([("arc", 0)], {"arc": 5}, task={**task, "metric": "acc_norm"})
    differs = difference(arc, other, BASELINE, ("baseline", "this run"))
    assert differs is not None and differs.field == "task"
    assert differs.phrase == "another lm-eval task (metric acc in baseline, metric acc_norm in this run)"
    changed = made_up_identity([("arc", 0)], {"arc": 5}, task={**task, "configs": {"arc": "cd"}})
    assert difference(arc, changed, CACHE).field == "task"


def test_a_session_with_chat_prompts_refuses_tasks_before_loading_them():
    from pytest_mmlu.tasks.registry import TaskError
    from pytest_mmlu.tasks.runs import TaskRuns

    runs = TaskRuns(None, lambda: None, None, chat=True)
    with pytest.raises(TaskError, match="plain prompts"):
        runs.prepared(TaskSpec("arc_easy"))


def test_a_task_of_the_include_folder_is_found_without_indexing_lm_eval_s_registry(tmp_path, monkeypatch):
    import json

    from pytest_mmlu.tasks import runs as runs_module

    base = {"dataset_path": "json", "output_type": "multiple_choice"}
    (tmp_path / "mine.yaml").write_text(json.dumps({**base, "task": "mine"}), encoding="utf-8")
    (tmp_path / "mixed.yaml").write_text(json.dumps({"group": "mixed", "task": ["mine", "arc_easy"]}))
    made = []
    real = runs_module.task_manager

    def recording(include_path=None, defaults=True):
        made.append(defaults)
        return real(include_path, defaults=False)  # the registry stays unindexed in this test

    monkeypatch.setattr(runs_module, "task_manager", recording)
    runs = runs_module.TaskRuns(str(tmp_path), lambda: None, None, chat=False)
    assert runs.manager("mine") is runs.manager("mine") and made == [False]
    runs.manager("mixed")  # names a registry task: the registry is needed
    assert made == [False, True]


def test_a_task_evaluation_s_identity_changes_with_what_changes_its_scores(tmp_path):
    """The cache's key of a task evaluation: its prompts, its metric, its configuration and the
    include folder's content each change it; nothing else does (the same folder read twice)."""
    import json

    from task_folders import write_task_folder

    from pytest_mmlu.identity import CACHE, difference
    from pytest_mmlu.models.content import ContentHashes
    from pytest_mmlu.tasks.runs import TaskRuns

    folder = write_task_folder(tmp_path / "tasks", docs=4)
    common = {
        "model": "sha256:m",
        "quantization": "none",
        "adapter": None,
        "adapter_name": None,
        "merge_adapter": False,
        "dtype": "float32",
        "device": "cpu",
        "scoring": 1,
        "software": {},
    }

    def identity(spec=None):
        spec = spec or TaskSpec("arc_style", 1, 3)
        runs = TaskRuns(str(folder), lambda: ContentHashes().folder(folder), None, chat=False)
        return runs.identity(spec, common)

    first = identity()
    assert difference(first, identity(), CACHE) is None
    assert first["task"]["metric"] == "acc" and first["n"] == 3
    assert difference(first, identity(TaskSpec("arc_style", 1, 3, "acc_norm")), CACHE).field == "task"
    assert difference(first, identity(TaskSpec("arc_style", 2, 3)), CACHE).field == "data"  # other prompts
    mc2 = TaskSpec("truthfulqa_mc2_style", None, 3)
    before = identity(mc2)
    asked_five = TaskRuns(str(folder), lambda: None, None, chat=False).prepared(TaskSpec("truthfulqa_mc2_style", 5, 3))
    assert asked_five.shown_shots == 0  # its YAML fixes 0: what ran is shown, as lm-eval keeps it
    data = folder / "truthfulqa_mc2_style_validation.jsonl"
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    rows[0]["mc2_targets"]["labels"] = rows[0]["mc2_targets"]["labels"][::-1]  # relabelled, same prompts
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert difference(before, identity(mc2), CACHE).field == "data"
    (folder / "notes.py").write_text("# a helper the YAMLs may call\n")
    assert difference(first, identity(), CACHE).phrase.startswith("another lm-eval task (include_path")
    config = json.loads((folder / "arc_style.yaml").read_text())
    (folder / "arc_style.yaml").write_text(json.dumps({**config, "target_delimiter": ": "}))
    changed = identity()
    assert changed["data"] != first["data"] and changed["task"]["configs"] != first["task"]["configs"]


def test_a_metric_value_that_is_not_a_number_is_no_answer_and_fails():
    """mc2 of log-likelihoods below -745 is 0/0: finite log-likelihoods, a NaN value."""
    from pytest_mmlu.gates import non_finite

    result = make_result([doc("t", 0, float("nan")), doc("t", 1, 1.0)], task={"name": "t", "metric": "acc"})
    assert not result.questions[0].finite and result.questions[0].prediction == -1
    verdict = non_finite(result)
    assert verdict is not None and "(NaN) for 1 of 2 questions: t#0" in verdict.line


def test_a_floor_on_the_evaluated_group_itself_is_judged():
    result = group_result(True)  # the group's acc is 0.25
    (verdict,) = floors(result, Floor(None, {"pair": 0.9}))
    assert verdict.line.startswith("lm-eval acc 0.250 < floor 0.900") and verdict.line.endswith(", pair)")


def test_a_mean_drop_of_a_metric_is_found_where_signs_alone_miss_it():
    """70 documents rise a hair, 30 fall by 0.2: the mean drops by 0.059."""
    base = [0.5] * 100
    new = [0.5011] * 70 + [0.30] * 30
    c = compare_paired(base, new)
    assert c.test == "sign-flip permutation" and (c.lost, c.gained) == (30, 70)
    assert c.regressed(0.02, 0.05) and c.p_worse < 0.001
    assert not compare_paired(base, base).regressed(0.0, 0.05)


def test_a_group_averaging_its_tasks_weighs_each_task_alike_in_the_paired_test():
    """A 2-document task drops from right to wrong, a 6-document one holds: the group's acc (the
    mean of the tasks') drops by 0.5, the pooled documents' by 0.25."""
    from pytest_mmlu.mmlu.results import document_weights

    entry = group_result(False).to_dict()
    weights = document_weights(entry)
    assert (
        weights is not None
        and weights["small", 0] == pytest.approx(2.0)
        and weights["large", 0] == pytest.approx(8 / 12)
    )
    keys = sorted(weights)
    base = [1.0 if k[0] == "small" else 0.0 for k in keys]
    new = [0.0] * len(keys)
    c = compare_paired(base, new, [weights[k] for k in keys])
    assert c.drop == pytest.approx(0.5)
    assert document_weights(group_result(True).to_dict()) is None


def test_a_task_config_hash_holds_no_address_nor_this_machine_s_folder():
    from pytest_mmlu.tasks.prepared import config_hash

    one = {"process_results": "functools.partial(<function pr at 0x7f1d78796160>, k=2)", "data": "/a/b/x.jsonl"}
    two = {"process_results": "functools.partial(<function pr at 0x7effe828a160>, k=2)", "data": "/c/x.jsonl"}
    assert config_hash(one, "/a/b") == config_hash(two, "/c")
    assert config_hash(one, "/a/b") != config_hash({**one, "k": 3}, "/a/b")


def test_lm_eval_sample_arguments_are_read_in_request_order():
    from pytest_mmlu.reports.lm_eval_tasks import arguments_in_order

    given = {f"gen_args_{i}": {"arg_0": "context", "arg_1": f" choice {i}"} for i in range(12)}
    assert [a[1] for a in arguments_in_order(given)] == [f" choice {i}" for i in range(12)]


def test_a_baseline_is_not_checked_against_tasks_that_changed_since_the_evaluation():
    from types import SimpleNamespace

    from pytest_mmlu.reports.lm_eval_tasks import task_baseline_entry

    ev = {"task": {"name": "arc", "metric": "acc"}, "identity": {"data": "sha256:then"}, "questions": []}
    refused = task_baseline_entry(None, ev, lambda _: SimpleNamespace(fingerprint="sha256:now"))["refused"]
    assert "now make other documents or prompts" in refused


def test_python_s_compiled_copies_are_not_content(tmp_path):
    from pytest_mmlu.models.content import ContentHashes

    (tmp_path / "utils.py").write_text("def f(): return 1\n")
    before = ContentHashes().folder(tmp_path)
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "utils.cpython-311.pyc").write_bytes(b"compiled at some time")
    assert ContentHashes().folder(tmp_path) == before


def test_a_task_function_counts_by_its_whole_module_wherever_it_lies(tmp_path):
    """A metric's module outside the include folder: a constant it reads changes the hash."""
    import importlib.util

    from pytest_mmlu.tasks.prepared import config_hash

    def load(text):
        path = tmp_path / "utils.py"
        path.write_text(text)
        spec = importlib.util.spec_from_file_location(f"utils_{abs(hash(text))}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.process_results

    code = "WEIGHT = {}\n\ndef process_results(doc, results):\n    return {{'acc': WEIGHT}}\n"
    one, other = load(code.format(1.0)), load(code.format(0.0))
    assert config_hash({"process_results": one}, None) != config_hash({"process_results": other}, None)
    import functools

    assert config_hash({"f": functools.partial(one, 1)}, None) == config_hash({"f": functools.partial(one, 1)}, None)


def test_a_task_that_could_not_load_in_one_shard_fails_its_gate_at_merge_with_lm_eval_s_reason():
    """The other shard evaluated it: merge does not call them different evaluations, it fails
    the gate with what stopped the task."""
    from pytest_mmlu import SCORING_VERSION, __version__
    from pytest_mmlu.judge import judge_record
    from pytest_mmlu.markers import ItemMarks
    from pytest_mmlu.records import failure_entry
    from pytest_mmlu.reports.merge import merge_shards

    spec = TaskSpec("arc", limit=2)
    gates = ItemMarks(spec=spec, floor=Floor(0.5)).to_dict()
    ran = make_result([doc("arc", 0, 1.0)], shots=None, task={"name": "arc", "metric": "acc"}, label="arc")
    why = "pytest-mmlu: lm-eval task 'arc' cannot be loaded: Unable to find data/arc.jsonl"
    entries = [
        {**ran.to_dict(), "shard": "1/2", "unsharded_n": 2},
        {**failure_entry(spec, None, "error", why), "shard": "2/2", "unsharded_n": None},
    ]

    def shard(i, entry):
        header = {"schema": 1, "scoring_version": SCORING_VERSION, "pytest_mmlu_version": __version__, "data": "d"}
        test = {"nodeid": "t.py::test_arc", "outcome": "passed", "gates": gates, "evaluations": [entry]}
        report = {**header, "model": None, "settings": {}, "shard": {"index": i, "count": 2}, "tests": [test]}
        return f"s{i}.json", report

    merged = merge_shards([shard(1, entries[0]), shard(2, entries[1])])
    (test,) = merged["tests"]
    judgement = judge_record(test)
    assert [v.line for v in judgement.failing] == [f"{why} (in s2.json (shard 2/2))"]


def test_compare_names_the_test_it_ran():
    import io
    from contextlib import redirect_stdout

    from pytest_mmlu.cli import _print_comparison

    c = {"base_accuracy": 0.5, "new_accuracy": 0.4, "n": 10, "lost": 3, "gained": 1, "p_worse": 0.3, "p_better": 0.9}
    for detail, name in (({}, "McNemar"), ({"test": "sign-flip permutation"}, "sign-flip permutation")):
        out = io.StringIO()
        with redirect_stdout(out):
            _print_comparison({"per_subject": {}}, {**c, **detail, "verdict": "unchanged"})
        assert f"; {name} p(worse)=0.3000" in out.getvalue()
