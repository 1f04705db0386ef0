"""This session's lm-eval task evaluations: lm-eval's task manager (its registry and the
``--mmlu-include-path`` folder), each declared task evaluation prepared once (its tasks
loaded, its requests built: ``prepared.py``), its identity, and its result in this job (the
whole, or a CI shard's documents). ``session.MmluSession`` hands a ``TaskSpec`` here."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..identity import Identity, evaluation_identity
from ..markers import TaskSpec
from ..mmlu.results import EvaluationResult
from ..text import first_line
from .prepared import PreparedTask, prepare
from .registry import TaskError, output_types, task_manager


class TaskRuns:
    """``include_path``: ``--mmlu-include-path``; ``include_content``: its content hash, found
    when first needed; ``shard``: this job's CI shard or None; ``chat``: the session renders
    MMLU with a chat template or system instruction (lm-eval's tasks are refused then)."""

    def __init__(
        self, include_path: str | None, include_content: Callable[[], str | None], shard: Any, chat: bool
    ) -> None:
        self.include_path = include_path
        self._include_content = include_content
        self.shard = shard
        self.chat = chat
        self._managers: dict[bool, Any] = {}  # with lm-eval's registry indexed, or the folder alone
        self._prepared: dict[tuple, PreparedTask] = {}

    def manager(self, name: str) -> Any:
        """lm-eval's TaskManager that knows ``name``: the include folder's alone when it defines
        ``name`` and everything under it (indexing lm-eval's 14,000 registry files takes seconds;
        the folder's tasks win over the registry's anyway), else one with the registry too."""
        if self.include_path is not None:
            if False not in self._managers:
                self._managers[False] = task_manager(self.include_path, defaults=False)
            try:
                for _ in output_types(self._managers[False], name):
                    pass
                return self._managers[False]
            except TaskError:
                pass  # a registry task, or a group naming some
        if True not in self._managers:
            self._managers[True] = task_manager(self.include_path)
        return self._managers[True]

    def prepared(self, spec: TaskSpec) -> PreparedTask:
        """``spec`` ready to evaluate; TaskError, one line, when it cannot be (an unknown or
        generative task, a metric it lacks, a dataset lm-eval cannot load)."""
        if self.chat:
            raise TaskError(
                f"lm-eval task {spec.task!r}: --mmlu-chat-template and --mmlu-system-instruction render MMLU's "
                "prompts; pytest-mmlu evaluates lm-eval tasks with their plain prompts: run them in a session "
                "without those options"
            )
        key = spec.key()
        if key not in self._prepared:
            try:
                self._prepared[key] = prepare(self.manager(spec.task), spec, self.include_path)
            except TaskError:
                raise
            except Exception as exc:  # noqa: BLE001 - lm-eval and datasets raise anything
                raise TaskError(f"lm-eval task {spec.task!r} cannot be loaded: {first_line(exc)}") from None
        return self._prepared[key]

    def for_entry(self, entry: Mapping[str, Any]) -> PreparedTask:
        """The prepared tasks of a task evaluation's report entry (its name, as asked)."""
        task = entry["task"]
        return self.prepared(TaskSpec(task["name"], **(task.get("asked") or {})))

    def holds(self, task: str, doc_id: int) -> bool:
        return self.shard is None or self.shard.holds(task, doc_id)

    def identity(self, spec: TaskSpec, common: Mapping[str, Any]) -> Identity:
        """``spec``'s identity, ``common`` holding the model's and variant's fields."""
        prepared = self.prepared(spec)
        return evaluation_identity(
            **common,
            prompt_format=None,
            data=prepared.fingerprint,
            questions=[(t, d) for t, d in prepared.doc_ids() if self.holds(t, d)],
            shots=prepared.shots,
            task=prepared.task_identity(self._include_content() if self.include_path else None),
        )

    def evaluate(
        self,
        evaluator: Any,
        spec: TaskSpec,
        budget: int | None,
        progress: Callable[[int, int], None] | None = None,
    ) -> EvaluationResult:
        """``spec``'s result in this job: every document, or this CI shard's (``evaluator``: the
        loaded model's ``TaskEvaluator``)."""
        holds = None if self.shard is None else self.holds
        return evaluator.evaluate_prepared(self.prepared(spec), budget, progress, holds)

    def unsharded_count(self, spec: TaskSpec) -> int:
        return len(self.prepared(spec).doc_ids())
