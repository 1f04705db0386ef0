"""The plugin's markers: registration text and argument validation.

Arguments are checked at collection so that a typo fails the run before any
model is loaded, with the test and the marker named.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from .sizes import parse_size
from .subjects import CATEGORY_OF, UnknownSubject, describe_subjects, resolve_subjects

MARKER_DOCS = (
    "mmlu(subjects, shots=5, limit=None): evaluate the model on MMLU subjects (a subject, a list, "
    "a category stem/humanities/social_sciences/other, or 'all'); limit = first N test questions "
    "of each subject. The result is the mmlu_result fixture.",
    "mmlu_memory_budget(size): fail when the peak device memory of an evaluation (weights "
    "included) exceeds size ('6 GiB', '6GB', '6144 MiB' or bytes); batches are sized to fit it.",
    "mmlu_accuracy_floor(min=None, per_subject={}): fail when accuracy is below min overall, or "
    "below per_subject[subject] for a subject.",
    "mmlu_no_regression(max_drop=0.02, alpha=0.05, against='baseline'): fail when accuracy "
    "dropped by more than max_drop against --mmlu-baseline (against='full': against the "
    "full-precision model in this session) on the same questions and a one-sided exact McNemar "
    "test is significant at alpha.",
    "mmlu_variant(quantization=None, adapter=None, merge_adapter=None): evaluate this test on a "
    "variant of the model: quantization none/int8/int4/fp8/nf4/bnb-int8, a PEFT adapter folder "
    "(adapter=False: none); unset arguments keep the session's.",
)


class MarkerError(ValueError):
    pass


@dataclass(frozen=True)
class EvalSpec:
    """What to evaluate: resolved subjects, number of shots, per-subject question limit."""

    subjects: tuple[str, ...]
    shots: int = 5
    limit: int | None = None
    label: str = ""

    def key(self) -> tuple:
        return (self.subjects, self.shots, self.limit)


@dataclass(frozen=True)
class Floor:
    overall: float | None = None
    per_subject: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class NoRegression:
    max_drop: float = 0.02
    alpha: float = 0.05
    against: str = "baseline"  # or "full": the full-precision model in the same session


@dataclass(frozen=True)
class VariantMark:
    """``@pytest.mark.mmlu_variant`` arguments, checked; None keeps the session's value."""

    quantization: str | None = None
    adapter: str | bool | None = None
    merge_adapter: bool | None = None


def _mmlu(subjects, shots=5, limit=None):
    pass


def _budget(size):
    pass


def _floor(min=None, per_subject=None):
    pass


def _no_regression(max_drop=0.02, alpha=0.05, against="baseline"):
    pass


def _variant(quantization=None, adapter=None, merge_adapter=None):
    pass


def _bind(signature_of, mark: pytest.Mark) -> dict[str, Any]:
    try:
        bound = inspect.signature(signature_of).bind(*mark.args, **mark.kwargs)
    except TypeError as exc:
        raise MarkerError(str(exc).replace("missing a required argument", "missing argument")) from None
    bound.apply_defaults()
    return dict(bound.arguments)


def make_eval_spec(subjects: Any, shots: Any = 5, limit: Any = None) -> EvalSpec:
    try:
        resolved = resolve_subjects(subjects)
    except UnknownSubject as exc:
        raise MarkerError(str(exc)) from None
    if isinstance(shots, bool) or not isinstance(shots, int) or not 0 <= shots <= 5:
        raise MarkerError(f"shots must be an int from 0 to 5 (MMLU has 5 dev questions), got {shots!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise MarkerError(f"limit must be a positive int or None, got {limit!r}")
    return EvalSpec(resolved, shots, limit, describe_subjects(subjects))


def _check_fraction(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise MarkerError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def _where(item: pytest.Item, mark: pytest.Mark) -> str:
    args = [repr(a) for a in mark.args] + [f"{k}={v!r}" for k, v in mark.kwargs.items()]
    return f"{item.nodeid}: @pytest.mark.{mark.name}({', '.join(args)})"


def _single(item: pytest.Item, name: str) -> pytest.Mark | None:
    marks = list(item.iter_markers(name))
    # The closest mark wins (function over class over module), as pytest does elsewhere.
    return marks[0] if marks else None


@dataclass(frozen=True)
class ItemMarks:
    spec: EvalSpec | None = None
    budget_bytes: int | None = None
    floor: Floor | None = None
    no_regression: NoRegression | None = None
    variant: VariantMark | None = None

    @property
    def uses_mmlu(self) -> bool:
        return any(v is not None for v in (self.spec, self.budget_bytes, self.floor, self.no_regression,
                                           self.variant))


def read_item_marks(item: pytest.Item) -> ItemMarks:
    """Validate the MMLU markers on one test; raise pytest.UsageError naming test and marker."""
    parsed: dict[str, Any] = {}
    for name, parse in (
        ("mmlu", _parse_mmlu),
        ("mmlu_memory_budget", _parse_budget),
        ("mmlu_accuracy_floor", _parse_floor),
        ("mmlu_no_regression", _parse_no_regression),
        ("mmlu_variant", _parse_variant),
    ):
        mark = _single(item, name)
        if mark is None:
            continue
        try:
            parsed[name] = parse(mark)
        except MarkerError as exc:
            raise pytest.UsageError(f"pytest-mmlu: {_where(item, mark)}: {exc}") from None
    return ItemMarks(
        spec=parsed.get("mmlu"),
        budget_bytes=parsed.get("mmlu_memory_budget"),
        floor=parsed.get("mmlu_accuracy_floor"),
        no_regression=parsed.get("mmlu_no_regression"),
        variant=parsed.get("mmlu_variant"),
    )


def _parse_mmlu(mark: pytest.Mark) -> EvalSpec:
    return make_eval_spec(**_bind(_mmlu, mark))


def _parse_budget(mark: pytest.Mark) -> int:
    try:
        return parse_size(_bind(_budget, mark)["size"])
    except ValueError as exc:
        raise MarkerError(str(exc)) from None


def _parse_floor(mark: pytest.Mark) -> Floor:
    args = _bind(_floor, mark)
    overall = None if args["min"] is None else _check_fraction("min", args["min"])
    per_subject = args["per_subject"] or {}
    if not isinstance(per_subject, Mapping):
        raise MarkerError(f"per_subject must be a dict of subject -> floor, got {per_subject!r}")
    checked = {}
    for subject, value in per_subject.items():
        if subject not in CATEGORY_OF:
            try:
                resolve_subjects(subject)
            except UnknownSubject as exc:
                raise MarkerError(f"per_subject: {exc}") from None
            raise MarkerError(f"per_subject keys must be single subjects, got {subject!r}")
        checked[subject] = _check_fraction(f"per_subject[{subject!r}]", value)
    if overall is None and not checked:
        raise MarkerError("give a floor: min=0.55 and/or per_subject={...}")
    return Floor(overall, checked)


def _parse_no_regression(mark: pytest.Mark) -> NoRegression:
    args = _bind(_no_regression, mark)
    max_drop = _check_fraction("max_drop", args["max_drop"])
    alpha = _check_fraction("alpha", args["alpha"])
    if not 0 < alpha < 1:
        raise MarkerError(f"alpha must be strictly between 0 and 1, got {alpha!r}")
    if args["against"] not in ("baseline", "full"):
        raise MarkerError(f"against must be 'baseline' or 'full', got {args['against']!r}")
    return NoRegression(max_drop, alpha, args["against"])


def _parse_variant(mark: pytest.Mark) -> VariantMark:
    from .variants import parse_adapter, parse_merge_adapter, parse_quantization

    args = _bind(_variant, mark)
    try:  # each argument checked as the options are; merge_adapter's adapter may be the session's
        if args["quantization"] is not None:
            parse_quantization(args["quantization"])
        if args["adapter"] is not None and args["adapter"] is not False:  # False: drop the session's
            args["adapter"] = parse_adapter(args["adapter"])  # absolute: the cache key hashes its files
        if args["merge_adapter"] is not None:
            parse_merge_adapter(args["merge_adapter"])
    except ValueError as exc:
        raise MarkerError(str(exc)) from None
    if all(v is None for v in args.values()):
        raise MarkerError("name the variant: quantization=..., adapter=... or merge_adapter=...")
    return VariantMark(**args)
