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
    ],
)
def test_a_task_we_cannot_score_is_refused_in_one_line_naming_its_output_type(folder, name, task, kind):
    message = refusal(folder, name)
    assert message is not None and "\n" not in message
    assert f"{task!r}" in message and f"{kind!r}" in message
    if name != task:
        assert f"(in {name!r})" in message


@pytest.mark.parametrize("name", ["choose", "fine"])
def test_log_likelihood_tasks_and_their_groups_pass(folder, name):
    assert refusal(folder, name) is None


def test_an_unknown_task_is_named(folder):
    assert "no lm-eval task or group named 'nowhere'" in refusal(folder, "nowhere")
