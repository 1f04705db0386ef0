"""An lm-eval task evaluation made ready before the model is loaded: its tasks loaded, every
document's requests built by lm-eval (``build_all_requests``: documents, seeded few-shot
draws, prompts), the metric it is judged on chosen and checked, and what identifies it.

Everything here needs lm-eval but no model: the identity of a task evaluation (the cache
key, what a baseline must match) is known before anything is loaded, as MMLU's is.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..markers import TaskSpec
from ..mmlu.chat import sha256 as hash_string  # lm-eval's hash_string: the sha256 of a text
from ..mmlu.results import EvaluationResult
from ..mmlu.shards import empty_result
from .registry import FEWSHOT_SEED, TaskError, TaskSet, check_requests, load_task_set


@dataclass
class PreparedTask:
    spec: TaskSpec
    tasks: TaskSet
    instances: dict[str, list[Any]]  # leaf task -> its Instances, every document of the limit
    metric: str
    include_path: str | None = None  # the --mmlu-include-path folder the tasks were found in

    @property
    def shots(self) -> dict[str, int]:
        return self.tasks.shots

    @property
    def shown_shots(self) -> int | None:
        """The few-shot count a result shows: the tasks' as run, where they agree (a YAML that
        fixes 0 keeps 0 whatever was asked, as in lm-eval)."""
        counts = set(self.shots.values())
        return counts.pop() if len(counts) == 1 else None

    def doc_ids(self) -> list[tuple[str, int]]:
        """(leaf task, doc_id) of every document, in lm-eval's order."""
        return [(name, doc_id) for name, built in self.instances.items() for doc_id in _unique_docs(built)]

    def description(self) -> dict[str, Any]:
        """What a result records of the evaluation (``EvaluationResult.task``)."""
        # The groups lm-eval reports the metric of (an aggregate of it); a tag, or a group of
        # another metric, has no value of its own.
        aggregates = {
            group: [entry for entry in entries if entry.metric == self.metric]
            for group, entries in self.tasks.group_aggregates.items()
        }
        aggregates = {group: entries for group, entries in aggregates.items() if entries}
        return {
            "name": self.spec.task,
            "asked": self.spec.asked,
            "metric": self.metric,
            "shots": self.shots,
            "groups": {g: m for g, m in self.tasks.groups.items() if g in aggregates},
            "weight_by_size": {
                group: all(bool(getattr(entry, "weight_by_size", True)) for entry in entries)
                for group, entries in aggregates.items()
            },
        }

    @functools.cached_property
    def fingerprint(self) -> str:
        """sha256 of what the model reads and is scored against: every request's context and
        continuation, and every document whole (lm-eval's ``doc_hash``: what ``process_results``
        reads, such as mc2's labels) with its target, task by task."""
        h = hashlib.sha256()
        for name in sorted(self.instances):
            task = self.tasks.tasks[name]
            for inst in self.instances[name]:
                h.update(json.dumps([name, inst.doc_id, inst.idx, *inst.arguments], ensure_ascii=False).encode())
            for doc_id, doc in _unique_docs(self.instances[name]).items():
                h.update(json.dumps([name, doc_id, doc_hash(doc), str(task.doc_to_target(doc))]).encode())
        return "sha256:" + h.hexdigest()

    def target(self, name: str, doc: Any) -> int:
        """A document's gold choice as lm-eval's ``process_results`` reads it (an index, or a
        choice's text; the first of several golds), -1 where it names none of the choices."""
        task = self.tasks.tasks[name]
        gold = task.doc_to_target(doc)
        if isinstance(gold, list):
            gold = gold[0] if gold else -1
        if isinstance(gold, str):
            choices = list(task.doc_to_choice(doc))
            return choices.index(gold) if gold in choices else (int(gold) if gold.isdigit() else -1)
        return int(gold)

    def task_identity(self, include_path: str | None) -> dict[str, Any]:
        """The identity's ``task`` field: the name, the metric, each leaf task's version and a
        hash of its configuration (``config_hash``), and the include folder's content
        (``include_path``: ``sha256:`` of its files, or None)."""
        configs = {
            name: config_hash(task.config.to_dict(keep_callable=True), self.include_path)
            for name, task in self.tasks.tasks.items()
        }
        return {
            "name": self.spec.task,
            "metric": self.metric,
            "versions": {name: str(task.VERSION) for name, task in sorted(self.tasks.tasks.items())},
            "configs": configs,
            "include_path": include_path,
        }

    def empty_result(self, budget_bytes: int | None, identity: Any, variant: str) -> EvaluationResult:
        """The result in a CI shard that holds none of its documents (``mmlu.shards``)."""
        tasks, shots, task = tuple(self.tasks.tasks), self.shown_shots, self.description()
        return empty_result(self.spec, budget_bytes, self.fingerprint, identity, tasks, shots, task, variant)


def config_hash(config: dict[str, Any], include_path: str | None) -> str:
    """sha256 of a task's configuration (lm-eval's ``TaskConfig.to_dict``, functions kept): each
    function by the whole source file of its module (its constants and helpers count too, where
    ever the file lies), and neither an object's address (it changes with each process) nor
    this machine's folder."""
    kept = {k: v for k, v in config.items() if k != "config_source"}
    text = re.sub(r" at 0x[0-9a-f]+", "", json.dumps(kept, sort_keys=True, default=_by_source, ensure_ascii=False))
    if include_path:
        text = text.replace(include_path, "<include_path>")
    return hashlib.sha256(text.encode()).hexdigest()


def _by_source(value: Any) -> str:
    """A configuration value JSON cannot hold: a function by its name and its module's whole
    source file (a partial by its function and arguments), never by its address."""
    if isinstance(value, functools.partial):
        return f"partial({_by_source(value.func)}, {value.args!r}, {value.keywords!r})"
    if callable(value):
        name = f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', type(value).__name__)}"
        try:
            source = Path(inspect.getsourcefile(value) or "").read_bytes()
        except (OSError, TypeError):
            return name  # built in, or of a module without a file: its library's version counts
        return f"{name} in a file of sha256 {hashlib.sha256(source).hexdigest()}"
    return str(value)


def doc_hash(doc: Any) -> str:
    """lm-eval's ``doc_hash`` of a document (its samples files hold it)."""
    from lm_eval.utils import handle_non_serializable

    return hash_string(json.dumps(doc, indent=2, default=handle_non_serializable, ensure_ascii=False))


def _unique_docs(instances: Iterable[Any]) -> dict[int, Any]:
    docs: dict[int, Any] = {}
    for inst in instances:
        docs.setdefault(inst.doc_id, inst.doc)
    return docs


def build_instances(tasks: TaskSet, limit: int | float | None) -> dict[str, list[Any]]:
    """Each leaf task's Instances, built by lm-eval with simple_evaluate's sample size."""
    from lm_eval.evaluator_utils import get_sample_size

    built = {}
    for name, task in tasks.tasks.items():
        # lm-eval seeds the few-shot sampler once, then draws doc by doc: seeded again here, a
        # second evaluation of the same task draws the same examples.
        task.set_fewshot_seed(seed=FEWSHOT_SEED)
        task.build_all_requests(limit=get_sample_size(task, limit), rank=0, world_size=1)
        check_requests(task)
        built[name] = list(task.instances)
    return built


def judged_metric(tasks: TaskSet, asked: str | None) -> str:
    """The metric a task evaluation is judged on: ``asked``, else the first metric of the first
    task (``acc``; a task whose list starts with ``acc_norm``: that). Every task must report it,
    aggregated as the mean of its documents' values with higher better: a floor and a paired
    test are judged on those values (``mcc``, ``f1``, perplexities are refused, saying so)."""
    from lm_eval.api.metrics import mean

    first = next(iter(tasks.tasks.values()))
    metric = asked or next(iter(first.aggregation()), None)
    if metric is None:
        raise TaskError(f"lm-eval task {first.config.task!r} reports no metric")
    for name, task in tasks.tasks.items():
        aggregations = task.aggregation()
        if metric not in aggregations:
            raise TaskError(
                f"lm-eval task {name!r} reports no metric {metric!r} (it reports {', '.join(aggregations) or 'none'})"
            )
        if aggregations[metric] is not mean:
            how = getattr(aggregations[metric], "__name__", str(aggregations[metric]))
            raise TaskError(
                f"lm-eval task {name!r}: metric {metric!r} is aggregated by {how!r} over the whole set, not as "
                "the mean of its documents' values: pytest-mmlu gates mean metrics (acc, acc_norm, mc2...)"
            )
        if not task.higher_is_better().get(metric, True):
            raise TaskError(
                f"lm-eval task {name!r}: lower {metric!r} is better: pytest-mmlu's floors and no-regression "
                "gates judge metrics where higher is better"
            )
    return metric


def prepare(manager: Any, spec: TaskSpec, include_path: str | None = None) -> PreparedTask:
    """``spec``'s tasks loaded by ``manager`` (lm-eval's TaskManager, reading ``include_path``),
    requests built."""
    tasks = load_task_set(manager, spec.task, spec.shots)
    metric = judged_metric(tasks, spec.metric)
    return PreparedTask(spec, tasks, build_instances(tasks, spec.limit), metric, include_path)
