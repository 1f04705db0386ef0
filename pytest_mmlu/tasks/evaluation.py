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
from ..models.load import LoadedModel
from .registry import FEWSHOT_SEED, TaskSet, check_requests


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
    engine_mode: str = ""


class TaskEvaluator:
    """Evaluates lm-eval task sets on one loaded model (model and meter reused across calls)."""

    def __init__(self, loaded: LoadedModel, batch_size: str | int = "auto") -> None:
        self.loaded = loaded
        self.batch_size = batch_size
        self.meter = make_meter(loaded.device, loaded.shared)
        self.tokenizer = LmEvalTokenizer(loaded.tokenizer)
        self.max_length = resolve_max_length(loaded.model.config, loaded.tokenizer)
        self.row_cost = RowCost.from_config(loaded.model.config, loaded.model.dtype.itemsize)

    def instances(self, tasks: TaskSet, limit: int | float | None) -> dict[str, list[Any]]:
        """Each leaf task's Instances, built by lm-eval with simple_evaluate's sample size."""
        from lm_eval.evaluator_utils import get_sample_size

        built = {}
        for name, task in tasks.tasks.items():
            # lm-eval seeds the few-shot sampler once, then draws doc by doc: seeded again
            # here, a second evaluation of the same task draws the same examples.
            task.set_fewshot_seed(seed=FEWSHOT_SEED)
            task.build_all_requests(limit=get_sample_size(task, limit), rank=0, world_size=1)
            check_requests(task)
            built[name] = list(task.instances)
        return built

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
        start = time.perf_counter()
        built = self.instances(tasks, limit)
        flat = [inst for name in built for inst in built[name]]
        requests = self.token_requests(flat)
        engine = build_engine(self.loaded, self.meter, self.batch_size, budget_bytes, self.row_cost, self.max_length)
        scores = engine.score(requests, progress=progress)
        for inst, score in zip(flat, scores, strict=True):
            inst.resps = [(score.loglikelihood, score.is_greedy)]
        result = TaskResult(
            name=tasks.name,
            shots={name: int(task.get_config("num_fewshot") or 0) for name, task in tasks.tasks.items()},
            metrics={},
            requests=len(requests),
        )
        sizes: dict[str, int] = {}
        for name, task in tasks.tasks.items():
            docs, values = metrics_of(task, built[name])
            result.docs.extend(docs)
            result.metrics[name] = aggregate(task, values)
            sizes[name] = max((len(items) for items in values.values()), default=0)  # lm-eval's sample_len
        for group, members in tasks.groups.items():
            result.metrics[group] = group_metrics(tasks, group, members, result.metrics, sizes)
        stats = engine.stats
        result.tokens = stats.prefix_tokens + stats.suffix_tokens
        # against the unique input rows (lm-eval's truncation applied): what the prefix tree saved
        result.prefix_tokens_saved = sum(len(row.tokens) for row in engine.rows(requests)) - result.tokens
        result.peak_memory_bytes = stats.peak_bytes
        result.engine_mode = stats.mode
        result.seconds = time.perf_counter() - start
        return result


def metrics_of(task: Any, instances: list[Any]) -> tuple[list[DocResult], dict[str, list[Any]]]:
    """lm-eval's evaluate() loop for one task: filters, then process_results per document."""
    task.apply_filters()
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
