"""lm-eval tasks by name, from its registry and ``--mmlu-include-path`` folders.

Only log-likelihood tasks are scored (``multiple_choice``, ``loglikelihood``).  A generative
task is refused from its configuration, before lm-eval builds it (building one loads its
dataset): one line naming the task and its output type.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

SCORED_OUTPUT_TYPES = ("multiple_choice", "loglikelihood")
# lm-eval's default output type (lm_eval/config/task.py): a YAML that names none generates.
DEFAULT_OUTPUT_TYPE = "generate_until"
# simple_evaluate's fewshot_random_seed default: the same few-shot examples as lm-eval draws.
FEWSHOT_SEED = 1234


class TaskError(ValueError):
    """A task that cannot be gated: unknown, or not a log-likelihood task."""


@dataclass
class TaskSet:
    """The leaf tasks a name stands for (one task, or every member of a group), in lm-eval's
    order, with each group's leaf members."""

    name: str
    tasks: dict[str, Any]  # leaf task name -> lm-eval Task (requests built later)
    groups: dict[str, list[str]] = field(default_factory=dict)
    # group -> its aggregate_metric_list entries (.metric, .weight_by_size): how lm-eval scores it
    group_aggregates: dict[str, list[Any]] = field(default_factory=dict)

    @property
    def shots(self) -> dict[str, int]:
        """Each leaf task's few-shot count as it runs."""
        return {name: int(task.get_config("num_fewshot") or 0) for name, task in self.tasks.items()}


def task_manager(include_path: str | None = None, defaults: bool = True) -> Any:
    """lm-eval's TaskManager: its registry (``defaults``; indexing it takes seconds) and the
    task folder ``include_path``, whose tasks win over the registry's of the same name."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=include_path, include_defaults=defaults)


PYTHON_TASK = "python"  # a task of its own class: its requests are checked once built


def output_types(manager: Any, name: str, output_type: str | None = None) -> Iterator[tuple[str, str]]:
    """(leaf task, output type) of every task ``name`` stands for, read from the YAML only;
    ``output_type``: a group member's override.  A task of its own Python class yields
    PYTHON_TASK (its YAML names no output type; its requests tell)."""
    from lm_eval.tasks._index import Kind
    from lm_eval.tasks._yaml_loader import load_yaml

    index = manager.task_index
    entry = index.get(name)
    if entry is None:
        raise TaskError(f"no lm-eval task or group named {name!r} (lm-eval's registry, --mmlu-include-path)")
    if entry.kind == Kind.TAG:  # its members, as lm-eval expands them
        for member in sorted(entry.tags):
            yield from output_types(manager, member, output_type)
        return
    if entry.kind == Kind.PY_TASK:
        yield name, output_type or PYTHON_TASK
        return
    if entry.yaml_path is not None:
        config = load_yaml(entry.yaml_path, resolve_func=False)
    else:
        config = dict(entry.cfg or {})
    if entry.kind == Kind.GROUP:
        members = config.get("task") or []
        for member in members if isinstance(members, list) else [members]:
            if isinstance(member, str):
                yield from output_types(manager, member, output_type)
            elif isinstance(member.get("task"), str) and member["task"] in index:
                # a registry task, group or tag with overrides: it keeps its own type unless overridden
                yield from output_types(manager, member["task"], member.get("output_type", output_type))
            else:  # a task defined inline, whole
                yield str(member.get("task")), member.get("output_type", output_type or DEFAULT_OUTPUT_TYPE)
        return
    yield name, output_type or config.get("output_type", DEFAULT_OUTPUT_TYPE)


def refuse_unscored(manager: Any, name: str) -> None:
    """Raise TaskError, one line, when ``name`` stands for any task we cannot score."""
    for task, kind in output_types(manager, name):
        if kind not in (*SCORED_OUTPUT_TYPES, PYTHON_TASK):
            of = "" if task == name else f" (in {name!r})"
            raise TaskError(
                f"lm-eval task {task!r}{of} has output_type {kind!r}: pytest-mmlu gates "
                f"log-likelihood tasks only ({', '.join(SCORED_OUTPUT_TYPES)})"
            )


def load_task_set(manager: Any, name: str, shots: int | None = None) -> TaskSet:
    """The tasks ``name`` stands for, configured as ``simple_evaluate(num_fewshot=shots)`` does:
    ``shots`` replaces each task's own count except where its YAML fixes 0; no count means the
    YAML's, else 0; the few-shot sampler seeded with lm-eval's default seed."""
    refuse_unscored(manager, name)
    seed_as_simple_evaluate()
    loaded = manager.load(name)
    groups = {group: leaves(loaded["group_map"], group) for group in loaded["group_map"]}
    aggregates = {g: list(getattr(obj, "aggregate_metric_list", None) or []) for g, obj in loaded["groups"].items()}
    return task_set(name, loaded["tasks"], shots, groups, aggregates)


def task_set(
    name: str,
    tasks: dict[str, Any],
    shots: int | None = None,
    groups: dict[str, list[str]] | None = None,
    aggregates: dict[str, list[Any]] | None = None,
) -> TaskSet:
    """lm-eval task objects made ready to evaluate (see :func:`load_task_set`)."""
    for task in tasks.values():
        filters = [getattr(f, "name", None) for f in getattr(task, "_filters", [])]
        if filters != ["none"]:
            raise TaskError(
                f"lm-eval task {task.config.task!r} filters its responses ({', '.join(map(str, filters))}): "
                "pytest-mmlu gates log-likelihood tasks scored on the responses as they are ('none')"
            )
        own = task.get_config("num_fewshot")
        if shots is not None and own != 0:
            task.set_config(key="num_fewshot", value=shots)
        elif own is None:
            task.set_config(key="num_fewshot", value=0)
        task.set_fewshot_seed(seed=FEWSHOT_SEED)
    return TaskSet(name, dict(tasks), groups or {}, aggregates or {})


def seed_as_simple_evaluate() -> None:
    """Python's, numpy's and torch's generators seeded as ``simple_evaluate`` seeds them before
    it loads tasks: a task whose ``process_docs`` shuffles (GPQA's choices) then gets
    lm-eval's order."""
    import numpy as np
    import torch
    from lm_eval.defaults import DEFAULT_OTHER_SEED, DEFAULT_RANDOM_SEED

    random.seed(DEFAULT_RANDOM_SEED)
    np.random.seed(DEFAULT_OTHER_SEED)
    torch.manual_seed(DEFAULT_OTHER_SEED)


def check_requests(task: Any) -> None:
    """After lm-eval built a task's requests: each is a log-likelihood of a continuation after a
    context (a task of its own class says so only now)."""
    for inst in task.instances:
        if inst.request_type != "loglikelihood" or len(inst.arguments) != 2:
            raise TaskError(
                f"lm-eval task {task.config.task!r} makes {inst.request_type!r} requests: pytest-mmlu "
                f"gates log-likelihood tasks only ({', '.join(SCORED_OUTPUT_TYPES)})"
            )


def leaves(group_map: dict[str, list[str]], name: str) -> list[str]:
    """The leaf tasks under ``name``, in order (a member may itself be a group)."""
    if name not in group_map:
        return [name]
    return [leaf for member in group_map[name] for leaf in leaves(group_map, member)]
