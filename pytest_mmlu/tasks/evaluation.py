"""One lm-eval task evaluation: lm-eval's requests -> our engine -> lm-eval's metrics.

The requests are the task's own Instances (``Task.build_all_requests``: its documents,
seeded few-shot examples, prompts and target delimiters), tokenized as lm-eval's HF backend
does (``mmlu.prompts.LmEvalTokenizer``).  The engine's scores go back into the Instances as
lm-eval's model would put them, and lm-eval's filters, ``process_results`` and aggregations
make every metric (``acc``, ``acc_norm``, a task's own such as TruthfulQA's ``mc2``).
"""

from __future__ import annotations

import numbers
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..engine import resolve_max_length
from ..engine.planner import RowCost
from ..memory.meters import make_meter
from ..mmlu.evaluation import build_engine
from ..mmlu.prompts import LmEvalTokenizer, TokenRequest
from ..mmlu.results import EvaluationResult, QuestionResult
from ..models.load import LoadedModel
from .prepared import PreparedTask, build_instances
from .registry import TaskError, TaskSet


@dataclass(frozen=True)
class DocResult:
    """One document: its requests' log-likelihoods and greedy flags, and lm-eval's metrics."""

    task: str
    doc_id: int
    loglikelihoods: tuple[float, ...]
    is_greedy: tuple[bool, ...]
    metrics: dict[str, Any]  # a number, or what lm-eval's aggregation takes (f1, mcc: (gold, pred))


@dataclass
class TaskResult:
    """What lm-eval reports for a task set: each leaf task's and group's metrics, every document."""

    name: str
    shots: dict[str, int]  # leaf task -> its few-shot count as run
    metrics: dict[str, dict[str, float]]  # task or group -> {metric: value}
    docs: list[DocResult] = field(default_factory=list)
    requests: int = 0
    tokens: int = 0
    prefix_tokens_saved: int = 0
    peak_memory_bytes: int = 0
    seconds: float = 0.0
    batch_sizes: list[int] = field(default_factory=list)
    engine_mode: str = ""
    engine_mode_reason: str | None = None


class TaskEvaluator:
    """Evaluates lm-eval task sets on one loaded model (model and meter reused across calls)."""

    def __init__(self, loaded: LoadedModel, batch_size: str | int = "auto") -> None:
        self.loaded = loaded
        self.batch_size = batch_size
        self.meter = make_meter(loaded.device, loaded.shared)
        self.tokenizer = LmEvalTokenizer(loaded.tokenizer)
        self.max_length = resolve_max_length(loaded.model.config, loaded.tokenizer)
        self.row_cost = RowCost.from_config(loaded.model.config, loaded.model.dtype.itemsize)

    def token_requests(self, instances: list[Any]) -> list[TokenRequest]:
        """lm-eval's (context, continuation) strings as token requests; requests of one context
        share one context object (the engine then makes them one input row)."""
        requests = []
        for inst in instances:
            context, continuation = inst.arguments
            requests.append(self.tokenizer.request(context, continuation))
        return requests

    def evaluate(
        self,
        tasks: TaskSet,
        limit: int | float | None = None,
        budget_bytes: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> TaskResult:
        """Every document of ``tasks`` (up to ``limit`` per task) scored and measured."""
        start = time.perf_counter()
        result = self.score(tasks, build_instances(tasks, limit), budget_bytes, progress)
        result.seconds = time.perf_counter() - start
        return result

    def score(
        self,
        tasks: TaskSet,
        built: dict[str, list[Any]],
        budget_bytes: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> TaskResult:
        """The Instances ``built`` (each leaf task's, all of a document's together) scored, and
        lm-eval's metrics made of them."""
        start = time.perf_counter()
        flat = [inst for name in built for inst in built[name]]
        requests = self.token_requests(flat)
        engine = build_engine(self.loaded, self.meter, self.batch_size, budget_bytes, self.row_cost, self.max_length)
        scores = engine.score(requests, progress=progress)
        for inst, score in zip(flat, scores, strict=True):
            inst.resps = [(score.loglikelihood, score.is_greedy)]
        result = TaskResult(
            name=tasks.name,
            shots=tasks.shots,
            metrics={},
            requests=len(requests),
        )
        sizes: dict[str, int] = {}
        for name, task in tasks.tasks.items():
            docs, values = metrics_of(task, built.get(name, []))
            result.docs.extend(docs)
            if values:
                result.metrics[name] = aggregate(task, values)
            sizes[name] = max((len(items) for items in values.values()), default=0)  # lm-eval's sample_len
        for group, members in tasks.groups.items():
            result.metrics[group] = group_metrics(tasks, group, members, result.metrics, sizes)
        stats = engine.stats
        result.tokens = stats.prefix_tokens + stats.suffix_tokens
        # against the unique input rows (lm-eval's truncation applied): what the prefix tree saved
        result.prefix_tokens_saved = sum(len(row.tokens) for row in engine.rows(requests)) - result.tokens
        result.peak_memory_bytes = stats.peak_bytes
        result.batch_sizes = list(stats.batch_sizes)
        result.engine_mode = stats.mode
        result.engine_mode_reason = stats.mode_reason
        result.seconds = time.perf_counter() - start
        return result

    def evaluate_prepared(
        self,
        prepared: PreparedTask,
        budget_bytes: int | None = None,
        progress: Callable[[int, int], None] | None = None,
        holds: Callable[[str, int], bool] | None = None,
    ) -> EvaluationResult:
        """A prepared task evaluation as a gated result (``mmlu.results``): each document with
        its value of the judged metric. ``holds(task, doc_id)``: the documents of this CI shard."""
        start = time.perf_counter()
        built = {
            name: [inst for inst in insts if holds is None or holds(name, inst.doc_id)]
            for name, insts in prepared.instances.items()
        }
        total = sum(len(insts) for insts in built.values())
        on_progress = None if progress is None else (lambda done: progress(done, total))
        scored = self.score(prepared.tasks, built, budget_bytes, on_progress)
        docs = {name: {inst.doc_id: inst.doc for inst in insts} for name, insts in built.items()}
        questions = [
            QuestionResult.scored(
                d.task,
                d.doc_id,
                prepared.target(d.task, docs[d.task][d.doc_id]),
                d.loglikelihoods,
                d.is_greedy,
                score=float(d.metrics[prepared.metric]),
            )
            for d in scored.docs
        ]
        outside = [q for q in questions if q.score is not None and q.finite and not 0 <= q.score <= 1]
        if outside:
            q = outside[0]
            raise TaskError(
                f"lm-eval task {q.subject!r}: metric {prepared.metric!r} is {q.score} for document {q.index}: "
                "pytest-mmlu gates metrics whose values lie in [0, 1] (an accuracy, a probability mass)"
            )
        batch_sizes = scored.batch_sizes
        return EvaluationResult(
            subjects=tuple(prepared.tasks.tasks),
            shots=prepared.shown_shots,
            limit=prepared.spec.limit,  # type: ignore[arg-type]  # lm-eval's limit may be a share
            label=prepared.spec.task,
            questions=questions,
            peak_memory_bytes=scored.peak_memory_bytes,
            budget_bytes=budget_bytes,
            batch_size=max(batch_sizes, default=0),
            batch_sizes=batch_sizes,
            seconds=time.perf_counter() - start,
            tokens=scored.tokens,
            device=self.loaded.device,
            dtype=self.loaded.dtype,
            data_fingerprint=prepared.fingerprint,
            weight_bytes=self.loaded.weight_bytes,
            engine_mode=scored.engine_mode,
            engine_mode_reason=scored.engine_mode_reason,
            peak_device=getattr(self.meter, "peak_device", None),
            variant=self.loaded.variant.label,
            task=prepared.description(),
        )


def metrics_of(task: Any, instances: list[Any]) -> tuple[list[DocResult], dict[str, list[Any]]]:
    """lm-eval's evaluate() loop for one task: filters, then process_results per document.
    ``instances``: those scored (all the task's, or a CI shard's documents)."""
    if not instances:  # a CI shard may hold none of a task's documents
        return [], {}
    for ensemble in task._filters:  # Task.apply_filters, over the instances scored
        ensemble.apply(instances)
    by_doc: dict[int, list[Any]] = defaultdict(list)
    for inst in instances:
        by_doc[inst.doc_id].append(inst)
    values: dict[str, list[Any]] = defaultdict(list)
    docs = []
    for doc_id in sorted(by_doc):
        own = sorted(by_doc[doc_id], key=lambda inst: inst.idx)
        responses = [inst.filtered_resps["none"] for inst in own]  # the one filter (registry.task_set)
        found = task.process_results(own[0].doc, responses)
        for metric, value in found.items():
            values[metric].append(value)
        docs.append(
            DocResult(
                task.config.task,
                doc_id,
                tuple(float(inst.resps[0][0]) for inst in own),
                tuple(bool(inst.resps[0][1]) for inst in own),
                {metric: as_number(value) for metric, value in found.items()},
            )
        )
    return docs, dict(values)


def as_number(value: Any) -> Any:
    """A numpy scalar as a Python number (JSON-ready); anything else as lm-eval made it."""
    return float(value) if isinstance(value, numbers.Real) else value


def aggregate(task: Any, values: dict[str, list[Any]]) -> dict[str, float]:
    """Each metric's value over the documents, by the task's own aggregation (mean by default)."""
    from lm_eval.api.metrics import mean

    functions = task.aggregation()
    return {metric: float(functions.get(metric, mean)(items)) for metric, items in values.items()}


def group_metrics(
    tasks: TaskSet, group: str, members: list[str], metrics: dict[str, dict[str, float]], sizes: dict[str, int]
) -> dict[str, float]:
    """A group's metrics as lm-eval aggregates them over its leaf tasks (its
    ``aggregate_metric_list``: weighted by size or not); none where the group names none."""
    from lm_eval.api.metrics import aggregate_subtask_metrics

    found: dict[str, float] = {}
    for entry in tasks.group_aggregates.get(group, []):
        have = [m for m in members if entry.metric in metrics.get(m, {})]
        if have:
            value = aggregate_subtask_metrics(
                [metrics[m][entry.metric] for m in have], [sizes[m] for m in have], entry.weight_by_size
            )
            found[entry.metric] = float(value)
    return found
