"""Which lm-eval tasks are scored, read from their YAML before lm-eval builds them (issue 19):
building a generative task would load its dataset only to refuse it."""

from __future__ import annotations

import json

import pytest


def write(folder, name, config):
    (folder / f"{name}.yaml").write_text(json.dumps(config), encoding="utf-8")


@pytest.fixture
def folder(tmp_path):
    # No dataset exists anywhere: refusing must not need one.
    base = {"dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(tmp_path / "none.jsonl")}}}
    write(tmp_path, "choose", {**base, "task": "choose", "output_type": "multiple_choice", "tag": ["mixed_tag"]})
    write(tmp_path, "writes", {**base, "task": "writes", "output_type": "generate_until", "tag": ["mixed_tag"]})
    write(tmp_path, "untyped", {**base, "task": "untyped"})  # lm-eval's default: generate_until
    write(tmp_path, "rolling", {**base, "task": "rolling", "output_type": "loglikelihood_rolling"})
    write(tmp_path, "mixed", {"group": "mixed", "task": ["choose", "writes"]})
    write(tmp_path, "nested", {"group": "nested", "task": ["mixed"]})
    write(tmp_path, "fine", {"group": "fine", "task": ["choose"]})
    # A member naming a registered group with overrides keeps that group's tasks' own types.
    write(tmp_path, "fine_again", {"group": "fine_again", "task": [{"task": "fine", "num_fewshot": 1}]})
    write(tmp_path, "mixed_again", {"group": "mixed_again", "task": [{"task": "mixed", "num_fewshot": 1}]})
    write(tmp_path, "own_class", {**base, "task": "own_class", "class": "!function own.OwnTask"})
    return tmp_path


def refusal(folder, name):
    from pytest_mmlu.tasks.registry import TaskError, refuse_unscored, task_manager

    try:
        refuse_unscored(task_manager(str(folder), defaults=False), name)
    except TaskError as exc:
        return str(exc)
    return None


@pytest.mark.parametrize(
    ("name", "task", "kind"),
    [
        ("writes", "writes", "generate_until"),
        ("untyped", "untyped", "generate_until"),
        ("rolling", "rolling", "loglikelihood_rolling"),
        ("mixed", "writes", "generate_until"),
        ("nested", "writes", "generate_until"),
        ("mixed_tag", "writes", "generate_until"),
        ("mixed_again", "writes", "generate_until"),
    ],
)
def test_a_task_we_cannot_score_is_refused_in_one_line_naming_its_output_type(folder, name, task, kind):
    message = refusal(folder, name)
    assert message is not None and "\n" not in message
    assert f"{task!r}" in message and f"{kind!r}" in message
    if name != task:
        assert f"(in {name!r})" in message


@pytest.mark.parametrize("name", ["choose", "fine", "fine_again", "own_class"])
def test_log_likelihood_tasks_and_their_groups_pass(folder, name):
    assert refusal(folder, name) is None


def test_an_unknown_task_is_named(folder):
    assert "no lm-eval task or group named 'nowhere'" in refusal(folder, "nowhere")


def test_a_task_of_its_own_class_is_judged_by_the_requests_it_builds():
    from types import SimpleNamespace

    from pytest_mmlu.tasks.registry import TaskError, check_requests

    def task(*instances):
        return SimpleNamespace(config=SimpleNamespace(task="own"), instances=list(instances))

    scored = SimpleNamespace(request_type="loglikelihood", arguments=("context", " continuation"))
    check_requests(task(scored, scored))
    generates = SimpleNamespace(request_type="generate_until", arguments=("context", {"until": ["\n"]}))
    with pytest.raises(TaskError, match="makes 'generate_until' requests"):
        check_requests(task(scored, generates))
    rolling = SimpleNamespace(request_type="loglikelihood_rolling", arguments=("text",))
    with pytest.raises(TaskError, match="'loglikelihood_rolling'"):
        check_requests(task(rolling))


@pytest.fixture
def loadable(tmp_path):
    """A multiple-choice task over a real local file (lm-eval builds it)."""
    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps({"q": f"question {i}", "a": i % 2}) + "\n" for i in range(4)))
    base = {
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data)}},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "{{q}}",
        "doc_to_choice": ["yes", "no"],
        "doc_to_target": "a",
    }
    write(tmp_path, "plain", {**base, "task": "plain"})
    filtered = {"name": "strict", "filter": [{"function": "take_first"}]}
    write(tmp_path, "filtered", {**base, "task": "filtered", "filter_list": [filtered]})
    return tmp_path


def test_loading_seeds_every_generator_as_simple_evaluate_does(loadable):
    """A task whose process_docs draws from python's, numpy's or torch's generator (GPQA
    shuffles its choices) gets lm-eval's draws: simple_evaluate seeds all three before loading."""
    import random

    import numpy as np
    import torch
    from lm_eval.defaults import DEFAULT_OTHER_SEED, DEFAULT_RANDOM_SEED

    from pytest_mmlu.tasks.registry import load_task_set, task_manager

    def draws():
        return random.random(), float(np.random.rand()), float(torch.rand(1))

    random.seed(DEFAULT_RANDOM_SEED)
    np.random.seed(DEFAULT_OTHER_SEED)
    torch.manual_seed(DEFAULT_OTHER_SEED)
    task_manager(str(loadable), defaults=False).load("plain")  # what simple_evaluate does
    want = draws()
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    load_task_set(task_manager(str(loadable), defaults=False), "plain")
    assert draws() == want


def test_a_task_that_filters_its_responses_is_refused(loadable):
    from pytest_mmlu.tasks.registry import TaskError, load_task_set, task_manager

    load_task_set(task_manager(str(loadable), defaults=False), "plain")
    with pytest.raises(TaskError, match="'filtered' filters its responses \\(strict\\)"):
        load_task_set(task_manager(str(loadable), defaults=False), "filtered")
