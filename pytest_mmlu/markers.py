"""The plugin's markers: one function per marker, whose signature and docstring are the
marker's documentation (``pytest --markers`` is made from them), and the rule by which
marks at several levels (module, class, function) combine.

How marks combine (never by dropping one):

- ``mmlu`` / ``lm_eval_task``: one evaluation per test. A second such mark at any level is
  a collection error naming both (evaluate more from the body with ``mmlu.evaluate`` and
  ``mmlu.evaluate_task``).
- ``mmlu_memory_budget``: every budget applies; the smallest is the one that binds.
- ``mmlu_accuracy_floor``: every floor applies, overall and per subject; the strictest wins.
- ``mmlu_no_regression``: every mark is a gate of its own, judged on its own (against the
  baseline and against the full model may stand together).
- ``mmlu_variant``: the marks' arguments are joined; one argument given two values at two
  levels is a collection error.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


# -- the markers: signature and docstring are the documentation ---------------------------------
def mmlu(subjects: Any, shots: int = 5, limit: int | None = None) -> None:
    """evaluate the model on MMLU subjects (a subject, a list, a category
    stem/humanities/social_sciences/other, or 'all'); limit = first N test questions of each
    subject. The result is the mmlu_result fixture. One per test."""


def lm_eval_task(
    name: str, shots: int | None = None, limit: int | float | None = None, metric: str | None = None
) -> None:
    """evaluate the model on an lm-eval log-likelihood task or group (its registry, or
    --mmlu-include-path), with lm-eval's own prompts, few-shot draws and metrics; shots=None:
    the task's own; limit = first N documents of each task (a float below 1: that share);
    metric: the task's first by default. The gate markers judge that metric. One per test."""


def mmlu_memory_budget(size: Any) -> None:
    """fail when the peak device memory of an evaluation (weights included) exceeds size
    ('6 GiB', '6GB', '6144 MiB' or bytes); batches are sized to fit it. Several: the smallest
    applies."""


def mmlu_accuracy_floor(min: float | None = None, per_subject: Mapping[str, float] | None = None) -> None:
    """fail when accuracy (a task's metric) is below min overall, or below per_subject[key] for a
    subject (a task of a group). Several (module, class, function): every floor applies, the
    strictest wins."""


def mmlu_no_regression(max_drop: float = 0.02, alpha: float = 0.05, against: str = "baseline") -> None:
    """fail when accuracy dropped by more than max_drop against --mmlu-baseline (against='full':
    against the full-precision model in this session) on the same questions and a one-sided
    exact McNemar test is significant at alpha. Several: each is judged."""


def mmlu_variant(quantization: str | None = None, adapter: Any = None, merge_adapter: bool | None = None) -> None:
    """evaluate this test on a variant of the model: quantization
    none/int8/int4/fp8/nf4/bnb-int8, a PEFT adapter folder (adapter=False: none); unset arguments
    keep the session's."""


MARKERS: dict[str, Callable[..., None]] = {
    f.__name__: f
    for f in (mmlu, lm_eval_task, mmlu_memory_budget, mmlu_accuracy_floor, mmlu_no_regression, mmlu_variant)
}
EVALUATION_MARKS = ("mmlu", "lm_eval_task")  # a test declares one of these, once


def marker_docs() -> list[str]:
    """``pytest --markers`` lines: each marker's signature and its docstring, nothing written twice."""
    docs = []
    for name, function in MARKERS.items():
        params = ", ".join(
            p.name if p.default is inspect.Parameter.empty else f"{p.name}={p.default!r}"
            for p in inspect.signature(function).parameters.values()
        )
        docs.append(f"{name}({params}): {' '.join((function.__doc__ or '').split())}")
    return docs


def defaults_of(marker: Callable[..., None]) -> dict[str, Any]:
    """A marker's default arguments: what the values below default to, written once."""
    return {p.name: p.default for p in inspect.signature(marker).parameters.values() if p.default is not p.empty}


class MarkerError(ValueError):
    pass


# -- what the markers declare ---------------------------------------------------------------------
@dataclass(frozen=True)
class EvalSpec:
    """What to evaluate: resolved subjects, number of shots, per-subject question limit."""

    subjects: tuple[str, ...]
    shots: int = defaults_of(mmlu)["shots"]
    limit: int | None = defaults_of(mmlu)["limit"]
    label: str = ""

    def key(self) -> tuple:
        return (self.subjects, self.shots, self.limit)

    @property
    def shown_label(self) -> str:
        """The label a result carries: the category or subject asked for, else the subjects."""
        return self.label or ",".join(self.subjects)

    def to_dict(self) -> dict[str, Any]:
        return {
            "subjects": list(self.subjects),
            "shots": self.shots,
            "limit": self.limit,
            "label": self.shown_label,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EvalSpec:
        return cls(tuple(d["subjects"]), int(d["shots"]), d.get("limit"), d.get("label") or "")


@dataclass(frozen=True)
class TaskSpec:
    """What to evaluate of lm-eval's tasks: a task or group name, its few-shot count (None: the
    task's own), a document limit per task and the metric judged (None: the task's first)."""

    task: str
    shots: int | None = defaults_of(lm_eval_task)["shots"]
    limit: int | float | None = defaults_of(lm_eval_task)["limit"]
    metric: str | None = defaults_of(lm_eval_task)["metric"]

    def key(self) -> tuple:
        return ("task", self.task, self.shots, self.limit, self.metric)

    @property
    def subjects(self) -> tuple[str, ...]:
        """Before its tasks are loaded, what it evaluates is known by its name only."""
        return (self.task,)

    @property
    def label(self) -> str:
        return self.task

    @property
    def shown_label(self) -> str:
        return self.task

    @property
    def asked(self) -> dict[str, Any]:
        """What was asked, as a task evaluation's result records it (``records.spec_key``)."""
        return {"shots": self.shots, "limit": self.limit, "metric": self.metric}

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "subjects": [self.task],
            "shots": self.shots,
            "limit": self.limit,
            "metric": self.metric,
            "label": self.task,
        }


def spec_from_dict(d: Mapping[str, Any]) -> EvalSpec | TaskSpec:
    """A declared evaluation as a record holds it: an lm-eval task's, or MMLU's."""
    if d.get("task") is not None:
        return TaskSpec(d["task"], d.get("shots"), d.get("limit"), d.get("metric"))
    return EvalSpec.from_dict(d)


@dataclass(frozen=True)
class Floor:
    overall: float | None = None
    per_subject: Mapping[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"min": self.overall, "per_subject": dict(self.per_subject)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Floor:
        return cls(d.get("min"), dict(d.get("per_subject") or {}))


@dataclass(frozen=True)
class NoRegression:
    max_drop: float = defaults_of(mmlu_no_regression)["max_drop"]
    alpha: float = defaults_of(mmlu_no_regression)["alpha"]
    against: str = defaults_of(mmlu_no_regression)["against"]  # or "full": the full model, this session

    def to_dict(self) -> dict[str, Any]:
        return {"max_drop": self.max_drop, "alpha": self.alpha, "against": self.against}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> NoRegression:
        return cls(d["max_drop"], d["alpha"], d.get("against", cls.against))


@dataclass(frozen=True)
class VariantMark:
    """``@pytest.mark.mmlu_variant`` arguments, checked; None keeps the session's value."""

    quantization: str | None = None
    adapter: str | bool | None = None
    merge_adapter: bool | None = None


@dataclass(frozen=True)
class ItemMarks:
    """Every MMLU gate a test declares, its marks at every level combined."""

    spec: EvalSpec | TaskSpec | None = None
    budget_bytes: int | None = None
    floor: Floor | None = None
    no_regressions: tuple[NoRegression, ...] = ()
    variant: VariantMark | None = None

    @property
    def uses_mmlu(self) -> bool:
        return any(v is not None for v in (self.spec, self.budget_bytes, self.floor, self.variant)) or bool(
            self.no_regressions
        )

    @property
    def gated(self) -> bool:
        """Declares a gate or an evaluation: it must be judged (a variant alone is neither)."""
        return any(v is not None for v in (self.spec, self.budget_bytes, self.floor)) or bool(self.no_regressions)

    def to_dict(self) -> dict[str, Any]:
        """The declared gates as a record holds them (``merge`` and ``compare`` judge from it)."""
        variant = (
            None
            if self.variant is None
            else {
                "quantization": self.variant.quantization,
                "adapter": self.variant.adapter,
                "merge_adapter": self.variant.merge_adapter,
            }
        )
        return {
            "evaluation": None if self.spec is None else self.spec.to_dict(),
            "budget_bytes": self.budget_bytes,
            "floor": None if self.floor is None else self.floor.to_dict(),
            "no_regression": [rule.to_dict() for rule in self.no_regressions],
            "variant": variant,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ItemMarks:
        variant = d.get("variant")
        return cls(
            spec=None if d.get("evaluation") is None else spec_from_dict(d["evaluation"]),
            budget_bytes=d.get("budget_bytes"),
            floor=None if d.get("floor") is None else Floor.from_dict(d["floor"]),
            no_regressions=tuple(NoRegression.from_dict(r) for r in d.get("no_regression") or ()),
            variant=None if variant is None else VariantMark(**variant),
        )
