"""One MMLU evaluation: questions -> lm-eval requests -> engine -> result."""

from __future__ import annotations

import time
from collections.abc import Callable

from ..engine import ScoringEngine, resolve_max_length
from ..engine.planner import BatchPlanner, RowCost
from ..markers import EvalSpec
from ..memory.allocator import HEAP_TRIM_THRESHOLD, release_memory
from ..memory.meters import make_meter
from ..models.load import LoadedModel
from .chat import PromptFormat, PromptRenderer
from .data import LETTERS, MmluData, Question
from .prompts import TokenRequest
from .requests import Group, RequestBuilder
from .results import EvaluationResult, QuestionResult

# Without a declared budget, use at most this share of the memory the device has free.
FREE_MEMORY_SHARE = 0.85
# Tokens per forward pass.  Packed batches carry no padding; on CPU one row already
# fills the GEMMs (bench/w5_bench.py batches), so wider batches only save overhead there.
MAX_BATCH_TOKENS = {"cpu": 4096, "cuda": 65536}


def build_engine(
    loaded: LoadedModel, meter, batch_size: str | int, budget_bytes: int | None, row_cost: RowCost, max_length: int
) -> ScoringEngine:
    """An engine whose batches fit ``budget_bytes`` (else the device's free memory)."""
    kind = "cuda" if loaded.device.startswith("cuda") else "cpu"
    release_memory(loaded.device)  # the baseline: what is live now, not what was freed but kept
    baseline = meter.current()
    if budget_bytes is not None:
        limit = budget_bytes
    else:
        limit = baseline + int(meter.available() * FREE_MEMORY_SHARE)
    fixed = batch_size if isinstance(batch_size, int) else None

    def planner() -> BatchPlanner:
        return BatchPlanner(
            row_cost,
            baseline,
            limit,
            meter.describe(),
            budget_declared=budget_bytes is not None,
            max_batch_tokens=MAX_BATCH_TOKENS[kind],
            fixed_rows=fixed,
            slack=HEAP_TRIM_THRESHOLD if kind == "cpu" else 0,
        )

    return ScoringEngine(loaded.model, max_length, planner, meter)


class Evaluator:
    """Evaluates MMLU specs on one loaded model; the model and meter are reused across calls."""

    def __init__(
        self,
        loaded: LoadedModel,
        data: MmluData,
        batch_size: str | int = "auto",
        prompt_format: PromptFormat | None = None,
    ) -> None:
        self.loaded = loaded
        self.data = data
        self.batch_size = batch_size
        self.meter = make_meter(loaded.device, loaded.shared)
        self.prompt_format = prompt_format or PromptFormat()
        self.renderer = PromptRenderer(self.prompt_format, loaded.tokenizer)
        self.builder = RequestBuilder(loaded.tokenizer)
        self.max_length = resolve_max_length(loaded.model.config, loaded.tokenizer)
        dtype_bytes = loaded.model.dtype.itemsize
        self.row_cost = RowCost.from_config(loaded.model.config, dtype_bytes)

    def requests(self, spec: EvalSpec) -> tuple[list[TokenRequest], list[Question]]:
        """Four requests per question (A-D), in question order; each subject's shared prompt
        text is tokenized once (``requests.py``)."""
        groups: list[Group] = []
        questions: list[Question] = []
        for subject in spec.subjects:
            shots = self.data.shots(subject, spec.shots)
            subject_questions = self.data.test_questions(subject, spec.limit)
            if not subject_questions:
                continue
            contexts = self.renderer.contexts(subject, shots, subject_questions)
            groups.append(Group(contexts, self.prompt_format.continuations))
            questions.extend(subject_questions)
        requests, _ = self.builder.build(groups)
        return requests, questions

    def engine(self, budget_bytes: int | None) -> ScoringEngine:
        return build_engine(self.loaded, self.meter, self.batch_size, budget_bytes, self.row_cost, self.max_length)

    def evaluate(
        self, spec: EvalSpec, budget_bytes: int | None = None, progress: Callable[[int, int], None] | None = None
    ) -> EvaluationResult:
        start = time.perf_counter()
        requests, questions = self.requests(spec)
        build_seconds = time.perf_counter() - start
        engine = self.engine(budget_bytes)
        total = len(questions)
        width = len(LETTERS)  # one request per choice
        on_progress = None if progress is None else (lambda done: progress(done // width, total))
        scores = engine.score(requests, progress=on_progress)
        results = []
        for i, q in enumerate(questions):
            own = scores[width * i : width * (i + 1)]
            results.append(
                QuestionResult.scored(
                    q.subject, q.index, q.answer, tuple(s.loglikelihood for s in own), tuple(s.is_greedy for s in own)
                )
            )
        stats = engine.stats
        return EvaluationResult(
            subjects=spec.subjects,
            shots=spec.shots,
            limit=spec.limit,
            label=spec.shown_label,
            questions=results,
            peak_memory_bytes=stats.peak_bytes,
            budget_bytes=budget_bytes,
            batch_size=max(stats.batch_sizes, default=0),
            batch_sizes=stats.batch_sizes,
            seconds=build_seconds + stats.seconds,
            tokens=stats.prefix_tokens + stats.suffix_tokens,
            device=self.loaded.device,
            dtype=self.loaded.dtype,
            data_fingerprint=self.data.fingerprint(spec.subjects),
            weight_bytes=self.loaded.weight_bytes,
            engine_mode=stats.mode,
            engine_mode_reason=stats.mode_reason,
            peak_device=getattr(self.meter, "peak_device", None),  # a spread model's highest GPU
            variant=self.loaded.variant.label,
            prompt_format=self.prompt_format.describe(self.renderer.template),
        )
