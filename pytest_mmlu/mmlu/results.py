"""Evaluation results: accuracy with a Wilson interval, breakdowns, every question.

Accuracy per category and overall is weighted by the number of questions
(lm-eval's ``weight_by_size: True``), i.e. correct / n over the pooled questions.

An lm-eval task evaluation (``task`` set) has the same shape: its questions are the task's
documents (``subject``: the leaf task, ``index``: ``doc_id``), each with its value of the
judged metric (``score``: 1/0 for ``acc``, a share for ``mc2``); its accuracy is that metric
as lm-eval aggregates it (a group's as the group weighs its tasks). A metric in [0, 1] has a
variance of at most p(1 - p): the Wilson interval stays a conservative 95% interval.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .subjects import CATEGORY_OF

Z95 = 1.959963984540054


def wilson_interval(correct: float, n: int, z: float = Z95) -> tuple[float, float]:
    if n == 0:
        return (0.0, 1.0)
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def all_finite(loglikelihoods: Sequence[float]) -> bool:
    return all(math.isfinite(ll) for ll in loglikelihoods)


def answerable(loglikelihoods: Sequence[float], score: float | None = None) -> bool:
    """Its log-likelihoods and a task metric's value (mc2 below -745 is 0/0) are numbers."""
    return all_finite(loglikelihoods) and (score is None or math.isfinite(score))


NO_ANSWER = -1  # the prediction of a question whose scores are not finite: never correct


@dataclass(frozen=True)
class QuestionResult:
    subject: str
    index: int
    target: int
    prediction: int
    loglikelihoods: tuple[float, ...]
    # Per choice: is it the greedy continuation (lm-eval's second response value)? None in
    # reports written before it was kept.
    is_greedy: tuple[bool, ...] | None = None
    score: float | None = None  # an lm-eval task document's metric value; None: MMLU (right or wrong)

    @classmethod
    def scored(
        cls,
        subject: str,
        index: int,
        target: int,
        loglikelihoods: tuple[float, ...],
        is_greedy: tuple[bool, ...] | None = None,
        score: float | None = None,
    ) -> QuestionResult:
        """A question and its answer; NaN/inf scores give NO_ANSWER (gates.non_finite fails
        the evaluation) instead of an exception that would lose the other questions."""
        return cls(
            subject,
            index,
            target,
            predict(loglikelihoods) if answerable(loglikelihoods, score) else NO_ANSWER,
            tuple(loglikelihoods),
            None if is_greedy is None else tuple(bool(g) for g in is_greedy),
            score,
        )

    @property
    def correct(self) -> bool:
        return self.prediction == self.target

    @property
    def value(self) -> float:  # right (1) or wrong (0), or a task metric's value
        return question_value({"prediction": self.prediction, "target": self.target, "score": self.score})

    @property
    def finite(self) -> bool:
        return answerable(self.loglikelihoods, self.score)


def question_value(q: Mapping[str, Any]) -> float:
    """A question entry's value: its ``score`` (an lm-eval task's document), else 1 if right."""
    score = q.get("score")
    if score is not None:
        return float(score)
    return 1 if q["prediction"] == q["target"] else 0


def shots_text(shots: int | None) -> str:
    """``5-shot``; an lm-eval task run with each task's own count: ``task's shots``."""
    return "task's shots" if shots is None else f"{shots}-shot"


def measure_text(task: Mapping[str, Any] | None) -> str:
    """What an evaluation's accuracy is: ``MMLU accuracy``, or ``lm-eval acc_norm``."""
    return "MMLU accuracy" if not task else f"lm-eval {task.get('metric')}"


def document_weights(entry: Mapping[str, Any]) -> dict[tuple[str, int], float] | None:
    """Each question's weight in an entry's accuracy, mean 1: None where all weigh alike; for a
    group of lm-eval tasks that averages its tasks (``weight_by_size`` false), each task's
    documents share one task's weight."""
    task = entry.get("task") or {}
    name = task.get("name")
    if name not in (task.get("groups") or {}) or (task.get("weight_by_size") or {}).get(name, True):
        return None
    counts: dict[str, int] = defaultdict(int)
    for q in entry["questions"]:
        counts[q["subject"]] += 1
    total = sum(counts.values())
    return {(q["subject"], q["index"]): total / (len(counts) * counts[q["subject"]]) for q in entry["questions"]}


@dataclass(frozen=True)
class Accuracy:
    correct: float  # right answers, or the sum of a task metric's values
    n: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else 0.0

    @property
    def ci95(self) -> tuple[float, float]:
        return wilson_interval(self.correct, self.n)


def predict(loglikelihoods: Sequence[float]) -> int:
    """argmax, first on ties (numpy's rule, which lm-eval uses).

    NaN or inf is refused: ``>`` is false against NaN, so a NaN row would silently answer A."""
    if not all_finite(loglikelihoods):
        raise ValueError(f"cannot predict from non-finite log-likelihoods {tuple(loglikelihoods)}")
    best = 0
    for i, ll in enumerate(loglikelihoods):
        if ll > loglikelihoods[best]:
            best = i
    return best


@dataclass
class EvaluationResult:
    subjects: tuple[str, ...]  # an lm-eval task evaluation: its leaf tasks
    shots: int | None  # None: an lm-eval task's own few-shot counts (``task["shots"]``)
    limit: int | None
    label: str
    questions: list[QuestionResult]
    peak_memory_bytes: int
    budget_bytes: int | None
    batch_size: int  # largest rows per forward pass
    batch_sizes: list[int]
    seconds: float
    tokens: int  # tokens run through the model (prefixes once, padding excluded)
    device: str
    dtype: str
    data_fingerprint: str = ""
    weight_bytes: int = 0
    from_cache: bool = False
    engine_mode: str = "prefix"
    engine_mode_reason: str | None = None  # why "plain": nothing could be shared
    peak_device: str | None = None  # a model spread over GPUs: the one whose peak was highest
    variant: str = "full"  # what was loaded: "full", "int8", "adapter NAME"... (variants.py)
    prompt_format: dict[str, Any] | None = None  # chat template (name, sha256), multiturn, system instruction
    identity: dict[str, Any] | None = None  # what exactly was evaluated (identity.py)
    # An lm-eval task evaluation: {"name", "metric", "shots": {leaf: n}, "groups": {group:
    # [leaves]}, "weight_by_size": {group: bool}}; None: MMLU.
    task: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    # -- derived figures -----------------------------------------------------------------------
    @property
    def n(self) -> int:
        return len(self.questions)

    @property
    def correct(self) -> float:
        return sum(q.value for q in self.questions)

    @property
    def overall(self) -> Accuracy:
        """Accuracy over every question; a task group's as the group weighs its tasks."""
        if self.task is not None and self.task.get("name") in self.task.get("groups", {}):
            return self._group(self.task["name"])
        return Accuracy(self.correct, self.n)

    @property
    def accuracy(self) -> float:
        return self.overall.accuracy

    @property
    def non_finite_questions(self) -> list[QuestionResult]:
        """Questions with a NaN or inf log-likelihood: no answer can be read from them."""
        return [q for q in self.questions if not q.finite]

    @property
    def ci95(self) -> tuple[float, float]:
        overall = self.overall
        return wilson_interval(overall.correct, overall.n)

    def _grouped(self, key) -> dict[str, Accuracy]:
        counts: dict[str, list[float]] = defaultdict(lambda: [0, 0])
        for q in self.questions:
            c = counts[key(q)]
            c[0] += q.value
            c[1] += 1
        return {k: Accuracy(c, int(n)) for k, (c, n) in sorted(counts.items())}

    def _group(self, group: str) -> Accuracy:
        """A task group's accuracy as lm-eval aggregates it: pooled over its documents
        (``weight_by_size``), else the mean of its tasks' accuracies."""
        assert self.task is not None
        leaves = self._grouped(lambda q: q.subject)
        members = [leaves[t] for t in self.task["groups"][group] if t in leaves]
        n = sum(a.n for a in members)
        if not members or self.task.get("weight_by_size", {}).get(group, True):
            return Accuracy(sum(a.correct for a in members), n)
        return Accuracy(sum(a.accuracy for a in members) / len(members) * n, n)

    @property
    def per_subject(self) -> dict[str, Accuracy]:
        """Per MMLU subject; of a task evaluation, per task and per group in it."""
        found = self._grouped(lambda q: q.subject)
        if self.task is not None:  # the evaluated group too: a floor may name it
            found.update((g, self._group(g)) for g in self.task.get("groups", {}))
        return found

    @property
    def per_category(self) -> dict[str, Accuracy]:
        if self.task is not None:
            return {}  # lm-eval's groups are in per_subject
        return self._grouped(lambda q: CATEGORY_OF[q.subject])

    # -- serialization (the JSON report's "evaluations" entries) -------------------------------
    def to_dict(self) -> dict[str, Any]:
        lo, hi = self.ci95
        return {
            "subjects": list(self.subjects),
            "label": self.label,
            "shots": self.shots,
            "limit": self.limit,
            "n": self.n,
            "accuracy": self.accuracy,
            "ci95": [lo, hi],
            "per_subject": {s: {"accuracy": a.accuracy, "n": a.n} for s, a in self.per_subject.items()},
            "per_category": {c: {"accuracy": a.accuracy, "n": a.n} for c, a in self.per_category.items()},
            "peak_memory_bytes": self.peak_memory_bytes,
            "budget_bytes": self.budget_bytes,
            "batch_size": self.batch_size,
            "batch_sizes": self.batch_sizes,
            "seconds": self.seconds,
            "tokens": self.tokens,
            "device": self.device,
            "dtype": self.dtype,
            "data_fingerprint": self.data_fingerprint,
            "weight_bytes": self.weight_bytes,
            "from_cache": self.from_cache,
            "engine_mode": self.engine_mode,
            "engine_mode_reason": self.engine_mode_reason,
            "peak_device": self.peak_device,
            "variant": self.variant,
            "prompt_format": self.prompt_format,
            **({} if self.identity is None else {"identity": self.identity}),
            **({} if self.task is None else {"task": self.task}),
            "questions": [
                {
                    "subject": q.subject,
                    "index": q.index,
                    "target": q.target,
                    "prediction": q.prediction,
                    "loglikelihoods": list(q.loglikelihoods),
                    **({} if q.is_greedy is None else {"is_greedy": list(q.is_greedy)}),
                    **({} if q.score is None else {"score": q.score}),
                }
                for q in self.questions
            ],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EvaluationResult:
        questions = [
            QuestionResult(
                q["subject"],
                int(q["index"]),
                int(q["target"]),
                int(q["prediction"]),
                tuple(float(x) for x in q["loglikelihoods"]),
                None if q.get("is_greedy") is None else tuple(bool(g) for g in q["is_greedy"]),
                None if q.get("score") is None else float(q["score"]),
            )
            for q in d["questions"]
        ]
        return cls(
            subjects=tuple(d["subjects"]),
            shots=None if d["shots"] is None else int(d["shots"]),
            limit=d["limit"],
            label=d.get("label", ",".join(d["subjects"])),
            questions=questions,
            peak_memory_bytes=int(d.get("peak_memory_bytes") or 0),
            budget_bytes=d.get("budget_bytes"),
            batch_size=int(d.get("batch_size") or 0),
            batch_sizes=list(d.get("batch_sizes", [])),
            seconds=float(d.get("seconds") or 0.0),
            tokens=int(d.get("tokens", 0)),
            device=d.get("device", "-"),
            dtype=d.get("dtype", "-"),
            data_fingerprint=d.get("data_fingerprint", ""),
            weight_bytes=int(d.get("weight_bytes", 0)),
            from_cache=bool(d.get("from_cache", False)),
            engine_mode=d.get("engine_mode", "prefix"),
            engine_mode_reason=d.get("engine_mode_reason"),
            peak_device=d.get("peak_device"),
            variant=d.get("variant", "full"),
            prompt_format=d.get("prompt_format"),
            identity=d.get("identity"),
            task=d.get("task"),
        )
