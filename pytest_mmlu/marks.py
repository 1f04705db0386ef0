"""A test's marks read, checked and combined: arguments are checked at collection, so that a typo
fails the run before any model is loaded, with the test and the marker named; marks at several
levels (module, class, function) combine by the rule ``markers.py`` states, never by dropping
one.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from .markers import (
    EVALUATION_MARKS,
    MARKERS,
    EvalSpec,
    Floor,
    ItemMarks,
    MarkerError,
    NoRegression,
    TaskSpec,
    VariantMark,
    lm_eval_task,
    mmlu,
    mmlu_accuracy_floor,
    mmlu_memory_budget,
    mmlu_no_regression,
    mmlu_variant,
)
from .mmlu.subjects import CATEGORY_OF, CATEGORY_SUBJECTS, UnknownSubject, describe_subjects, resolve_subjects
from .models.variants import parse_adapter, parse_merge_adapter, parse_quantization
from .sizes import parse_size


# -- checking and combining ---------------------------------------------------------------------------
def _bind(signature_of: Callable[..., None], mark: pytest.Mark) -> dict[str, Any]:
    try:
        bound = inspect.signature(signature_of).bind(*mark.args, **mark.kwargs)
    except TypeError as exc:
        raise MarkerError(str(exc).replace("missing a required argument", "missing argument")) from None
    bound.apply_defaults()
    return dict(bound.arguments)


def make_eval_spec(subjects: Any, shots: Any = EvalSpec.shots, limit: Any = EvalSpec.limit) -> EvalSpec:
    try:
        resolved = resolve_subjects(subjects)
    except UnknownSubject as exc:
        raise MarkerError(str(exc)) from None
    if isinstance(shots, bool) or not isinstance(shots, int) or not 0 <= shots <= 5:
        raise MarkerError(f"shots must be an int from 0 to 5 (MMLU has 5 dev questions), got {shots!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise MarkerError(f"limit must be a positive int or None, got {limit!r}")
    return EvalSpec(resolved, shots, limit, describe_subjects(subjects))


def make_task_spec(
    name: Any, shots: Any = TaskSpec.shots, limit: Any = TaskSpec.limit, metric: Any = TaskSpec.metric
) -> TaskSpec:
    """An lm-eval task evaluation, its arguments checked (the task itself is found when it runs:
    lm-eval's registry is not read at collection)."""
    if not isinstance(name, str) or not name.strip():
        raise MarkerError(f"name must be an lm-eval task or group name, got {name!r}")
    if shots is not None and (isinstance(shots, bool) or not isinstance(shots, int) or shots < 0):
        raise MarkerError(f"shots must be a non-negative int or None (the task's own), got {shots!r}")
    if limit is not None and (
        isinstance(limit, bool)
        or not isinstance(limit, (int, float))
        or (isinstance(limit, int) and limit < 1)
        or (isinstance(limit, float) and not 0 < limit < 1)
    ):
        raise MarkerError(f"limit must be a positive int, a float in (0, 1) (a share) or None, got {limit!r}")
    if metric is not None and (not isinstance(metric, str) or not metric):
        raise MarkerError(f"metric must be a metric name such as 'acc' or 'acc_norm', got {metric!r}")
    return TaskSpec(name.strip(), shots, limit, metric)


def _check_fraction(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise MarkerError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def _text(mark: pytest.Mark) -> str:
    args = [repr(a) for a in mark.args] + [f"{k}={v!r}" for k, v in mark.kwargs.items()]
    return f"@pytest.mark.{mark.name}({', '.join(args)})"


def _level(node: Any) -> str:
    """Where a mark was put: the function, its class or its module."""
    kind = type(node).__name__
    return {"Function": "on the function", "Class": f"on class {node.name}", "Module": f"in module {node.name}"}.get(
        kind, f"on {node.name}"
    )


def marks_on(item: pytest.Item) -> tuple[str, ...]:
    """The names of the MMLU marks a test carries now, at every level: read again after set-up
    and after the body, a mark applied while the test ran (``request.applymarker``) shows."""
    return tuple(mark.name for mark in item.iter_markers() if mark.name in MARKERS)


def read_item_marks(item: pytest.Item) -> ItemMarks:
    """Validate and combine the MMLU markers on one test; raise pytest.UsageError naming the
    test and the marks."""
    parsed: dict[str, Any] = {}
    for name, parse, combine in PARSERS:
        found = [(node, mark) for node, mark in item.iter_markers_with_node(name)]
        if not found:
            continue
        values = []
        for node, mark in found:
            try:
                values.append((node, mark, _parse_floor(mark, _mmlu_only(item)) if name == FLOOR else parse(mark)))
            except MarkerError as exc:
                raise pytest.UsageError(f"pytest-mmlu: {item.nodeid}: {_text(mark)}: {exc}") from None
        try:
            parsed[name] = combine(values)
        except MarkerError as exc:
            raise pytest.UsageError(f"pytest-mmlu: {item.nodeid}: {exc}") from None
    if "mmlu" in parsed and "lm_eval_task" in parsed:
        both = "; ".join(
            f"{_text(mark)} {_level(node)}"
            for name in EVALUATION_MARKS
            for node, mark in item.iter_markers_with_node(name)
        )
        raise pytest.UsageError(
            f"pytest-mmlu: {item.nodeid}: an MMLU and an lm-eval task evaluation are both declared ({both}): "
            "a test declares one evaluation; evaluate more with mmlu.evaluate(...) or mmlu.evaluate_task(...) "
            "in its body, or split it"
        )
    return ItemMarks(
        spec=parsed.get("mmlu") or parsed.get("lm_eval_task"),
        budget_bytes=parsed.get("mmlu_memory_budget"),
        floor=parsed.get("mmlu_accuracy_floor"),
        no_regressions=parsed.get("mmlu_no_regression", ()),
        variant=parsed.get("mmlu_variant"),
    )


def _parse_mmlu(mark: pytest.Mark) -> EvalSpec:
    return make_eval_spec(**_bind(mmlu, mark))


def _parse_task(mark: pytest.Mark) -> TaskSpec:
    return make_task_spec(**_bind(lm_eval_task, mark))


def _one_evaluation(values: list[tuple[Any, pytest.Mark, Any]]) -> Any:
    if len(values) > 1:
        marks = "; ".join(f"{_text(mark)} {_level(node)}" for node, mark, _ in values)
        raise MarkerError(
            f"{len(values)} @pytest.mark.{values[0][1].name} marks apply ({marks}): a test declares one "
            f"evaluation; evaluate more with mmlu.evaluate(...) or mmlu.evaluate_task(...) in its body, or split it"
        )
    return values[0][2]


def _parse_budget(mark: pytest.Mark) -> int:
    try:
        return parse_size(_bind(mmlu_memory_budget, mark)["size"])
    except ValueError as exc:
        raise MarkerError(str(exc)) from None


def _smallest_budget(values: list[tuple[Any, pytest.Mark, int]]) -> int:
    return min(v for _, _, v in values)


def _parse_floor(mark: pytest.Mark, mmlu_only: bool = True) -> Floor:
    """``mmlu_only``: the test evaluates MMLU alone (its ``mmlu`` mark, no lm-eval task), so a
    key that is no MMLU subject is a typo; otherwise it may name an lm-eval task, and a floor
    no evaluation covers fails the test when it ends (``gates.floor_uncovered``)."""
    args = _bind(mmlu_accuracy_floor, mark)
    overall = None if args["min"] is None else _check_fraction("min", args["min"])
    per_subject = args["per_subject"] or {}
    if not isinstance(per_subject, Mapping):
        raise MarkerError(f"per_subject must be a dict of subject -> floor, got {per_subject!r}")
    checked = {}
    for subject, value in per_subject.items():
        if not isinstance(subject, str):
            raise MarkerError(f"per_subject keys must be subject or task names, got {subject!r}")
        if subject not in CATEGORY_OF and (mmlu_only or subject in CATEGORY_SUBJECTS or subject == "all"):
            try:
                resolve_subjects(subject)
            except UnknownSubject as exc:
                raise MarkerError(f"per_subject: {exc}") from None
            raise MarkerError(f"per_subject keys must be single subjects, got {subject!r}")
        checked[subject] = _check_fraction(f"per_subject[{subject!r}]", value)
    if overall is None and not checked:
        raise MarkerError("give a floor: min=0.55 and/or per_subject={...}")
    return Floor(overall, checked)


def _mmlu_only(item: pytest.Item) -> bool:
    """The test evaluates MMLU alone: no lm-eval task mark, and no ``mmlu`` fixture whose body
    could call ``evaluate_task``."""
    return item.get_closest_marker("lm_eval_task") is None and "mmlu" not in getattr(item, "fixturenames", ())


FLOOR = "mmlu_accuracy_floor"


def _strictest_floor(values: list[tuple[Any, pytest.Mark, Floor]]) -> Floor:
    mins = [f.overall for _, _, f in values if f.overall is not None]
    per_subject: dict[str, float] = {}
    for _, _, f in values:
        for subject, minimum in f.per_subject.items():
            per_subject[subject] = max(minimum, per_subject.get(subject, minimum))
    return Floor(max(mins) if mins else None, per_subject)


def _parse_no_regression(mark: pytest.Mark) -> NoRegression:
    args = _bind(mmlu_no_regression, mark)
    max_drop = _check_fraction("max_drop", args["max_drop"])
    alpha = _check_fraction("alpha", args["alpha"])
    if not 0 < alpha < 1:
        raise MarkerError(f"alpha must be strictly between 0 and 1, got {alpha!r}")
    if args["against"] not in ("baseline", "full"):
        raise MarkerError(f"against must be 'baseline' or 'full', got {args['against']!r}")
    return NoRegression(max_drop, alpha, args["against"])


def _every_rule(values: list[tuple[Any, pytest.Mark, NoRegression]]) -> tuple[NoRegression, ...]:
    rules: list[NoRegression] = []
    for _, _, rule in values:
        if rule not in rules:  # the same rule twice is one gate
            rules.append(rule)
    return tuple(rules)


def _parse_variant(mark: pytest.Mark) -> VariantMark:
    args = _bind(mmlu_variant, mark)
    try:  # each argument checked as the options are; merge_adapter's adapter may be the session's
        if args["quantization"] is not None:
            parse_quantization(args["quantization"])
        if args["adapter"] is not None and args["adapter"] is not False:  # False: drop the session's
            args["adapter"] = parse_adapter(args["adapter"])  # absolute: its content is hashed
        if args["merge_adapter"] is not None:
            parse_merge_adapter(args["merge_adapter"])
    except ValueError as exc:
        raise MarkerError(str(exc)) from None
    if all(v is None for v in args.values()):
        raise MarkerError("name the variant: quantization=..., adapter=... or merge_adapter=...")
    return VariantMark(**args)


def _joined_variant(values: list[tuple[Any, pytest.Mark, VariantMark]]) -> VariantMark:
    joined: dict[str, Any] = {}
    origin: dict[str, tuple[Any, pytest.Mark]] = {}
    for node, mark, variant in values:
        for name in ("quantization", "adapter", "merge_adapter"):
            value = getattr(variant, name)
            if value is None:
                continue
            if name in joined and joined[name] != value:
                first_node, first_mark = origin[name]
                raise MarkerError(
                    f"{_text(first_mark)} {_level(first_node)} and {_text(mark)} {_level(node)} "
                    f"give {name} two values: give it once"
                )
            joined[name], origin[name] = value, (node, mark)
    return VariantMark(**joined)


PARSERS: tuple[tuple[str, Callable[[pytest.Mark], Any], Callable[[list], Any]], ...] = (
    ("mmlu", _parse_mmlu, _one_evaluation),
    ("lm_eval_task", _parse_task, _one_evaluation),
    ("mmlu_memory_budget", _parse_budget, _smallest_budget),
    ("mmlu_accuracy_floor", _parse_floor, _strictest_floor),
    ("mmlu_no_regression", _parse_no_regression, _every_rule),
    ("mmlu_variant", _parse_variant, _joined_variant),
)
