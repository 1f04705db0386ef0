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
    assert set(group_result(True).per_subject) == {"small", "large"}
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
