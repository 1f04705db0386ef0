"""A test's MMLU evaluations, as the test runs: each evaluated (or read from the cache), recorded
in the test's record (``records.py``) and judged by the one judge (``judge.py``); the record
kept up to date with the test's outcome, phase by phase.

The pytest hooks and fixtures (``plugin.py``) call these; what a test's item holds between
phases lives in its stash under the keys below.
"""

from __future__ import annotations

from typing import Any

import pytest

try:  # what pytest itself decides of a test's xfail marks (their conditions, raises=...)
    from _pytest.skipping import evaluate_xfail_marks
except ImportError:  # pragma: no cover - pytest moved it: the closest mark is read instead
    evaluate_xfail_marks = None  # type: ignore[assignment]

from . import gates, judge, markers, records
from .memory.errors import BudgetTooSmall, MeterUnavailable, OutOfMemory
from .mmlu.data import DataError
from .mmlu.results import EvaluationResult
from .models.errors import ModelLoadError
from .outputs.junit import junit_properties
from .outputs.progress import progress
from .session import MmluSession
from .tasks.registry import TaskError

SESSION = pytest.StashKey[MmluSession]()
MARKS = pytest.StashKey[markers.ItemMarks]()
RECORD = pytest.StashKey[dict]()  # the test's record while it runs
DEFERRED = pytest.StashKey[list]()  # failing verdicts found during setup, raised in the call phase
MMLU_FIXTURES = {"mmlu", "mmlu_result", "mmlu_model"}
# What stops a test's evaluation, rather than answering it: each becomes a gate's verdict.
STOPPED = (BudgetTooSmall, OutOfMemory, MeterUnavailable, DataError, ModelLoadError, TaskError)


def runs_tests(config: pytest.Config) -> bool:
    """False for --collect-only, --setup-plan and --setup-only: no test body runs, so no
    verdict is judged, printed or written (a report left from a real run stays as it is)."""
    option = config.option
    return not (option.collectonly or getattr(option, "setuponly", False) or getattr(option, "setupplan", False))


def is_mmlu(item: pytest.Item) -> bool:
    """A test that declares an MMLU mark or asks for an MMLU fixture: it has a record."""
    return item.stash[MARKS].uses_mmlu or bool(MMLU_FIXTURES & set(getattr(item, "fixturenames", ())))


def fail(verdicts: list[gates.Verdict]) -> None:
    pytest.fail("\n".join(v.line for v in verdicts), pytrace=False)


def run_evaluation(
    item: pytest.Item,
    spec: markers.EvalSpec | markers.TaskSpec,
    variant: Any = None,
) -> tuple[EvaluationResult | None, list[gates.Verdict]]:
    """Evaluate (or read from the cache), record, judge; return the result and its failing
    verdicts. A ``mmlu_no_regression(against="full")`` gate's reference (the full model on the
    same questions) is recorded first, beside the evaluation it is compared with."""
    sess = item.config.stash[SESSION]
    item_marks = item.stash[MARKS]
    record = item.stash[RECORD]
    shown = progress(item.config, item.nodeid)
    if variant is None:  # the test's mark (mmlu_result); mmlu.evaluate passes its own
        try:
            variant = sess.variant_of(item_marks.variant)
        except ValueError as exc:  # e.g. merge_adapter=True with no adapter anywhere
            fail([gates.bad_variant(str(exc))])
    request = None
    try:
        if any(r.against == "full" for r in item_marks.no_regressions) and not variant.is_full:
            if records.reference_for(record["evaluations"], spec.to_dict()) is None:
                record["evaluations"].append(entry(sess, sess.full_result(spec), spec, records.REFERENCE))
        request = sess.request(spec, item_marks.budget_bytes, variant)
        result = sess.evaluate(request, shown)
    except STOPPED as exc:
        verdict = gates.error(exc)
        identity = request.identity if request is not None else _identity_if_known(sess, spec, variant)
        record["evaluations"].append(  # a report row, not a gap
            records.failure_entry(spec, item_marks.budget_bytes, verdict.kind, verdict.line, identity)
        )
        if verdict.kind == "error":
            fail([verdict])  # no model or no data: stop now (an error in setup, a failure in the body)
        return None, [verdict]  # a budget below batch 1 fails like any other gate
    finally:
        if shown is not None:
            shown.close()
    record["evaluations"].append(entry(sess, result, spec))
    judgement = judge.judge_record(record, baseline_of(item), final=False)
    item.stash[RECORD] = judge.apply(record, judgement)
    item.user_properties.extend(junit_properties(result))
    failing = [v for v in judgement.evaluations[-1] if v.fails]
    if any(v.kind in ("non-finite", "error") for v in failing):
        fail(failing)  # no answer, or a misused gate: an error in setup (the marker), a failure in the body
    return result, failing


def _identity_if_known(
    sess: MmluSession, spec: markers.EvalSpec | markers.TaskSpec, variant: Any
) -> dict[str, Any] | None:
    """What an evaluation that could not run would have been, where that can be known."""
    try:
        return sess.identity(spec, variant)
    except (DataError, ModelLoadError, TaskError):
        return None


def entry(
    sess: MmluSession,
    result: EvaluationResult,
    spec: markers.EvalSpec | markers.TaskSpec,
    role: str | None = None,
) -> dict[str, Any]:
    """A result as the record holds it: in a CI shard, marked so (merge judges the whole, and
    checks that the shards hold all of it)."""
    found = result.to_dict()
    if role is not None:
        found["role"] = role
    if sess.settings.shard is not None:
        found["shard"] = str(sess.settings.shard)
        found["unsharded_n"] = sess.unsharded_count(spec)
    return found


def baseline_of(item: pytest.Item) -> Any:
    """The baseline the test's gates compare with (read once): only a test that declares a gate
    against it needs it, and a shard judges none."""
    sess = item.config.stash[SESSION]
    wanted = any(r.against == "baseline" for r in item.stash[MARKS].no_regressions)
    return sess.baseline() if wanted and sess.settings.shard is None else None


def judged(item: pytest.Item, record: dict[str, Any]) -> judge.Judgement:
    """The test's record judged as a whole (it will not grow): its gates and its own."""
    return judge.judge_record(record, baseline_of(item))


def outcome(report: pytest.TestReport, before: str | None) -> str | None:
    """The test's outcome after this phase's report (pytest's words; xfail kept apart)."""
    if report.when == "call":
        if hasattr(report, "wasxfail"):
            return "xfailed" if report.skipped else "xpassed"
        return report.outcome
    if report.skipped:
        return "skipped"
    if report.failed:
        return "error"  # in set-up or teardown
    return before


def track(item: pytest.Item, report: pytest.TestReport) -> None:
    """Bring the test's record up to date with a phase's report; at teardown, judge it whole
    and put it on the report (``pytest_mmlu_record``): the way to the controller of an xdist run."""
    sess = item.config.stash[SESSION]
    record = item.stash[RECORD]
    if (
        report.when == "setup"
        and report.failed
        and "mmlu_model" in getattr(item, "fixturenames", ())
        and not record["evaluations"]
    ):
        load_error = sess.load_error_of(item.stash[MARKS].variant)
        if load_error is not None:  # mmlu_model could not load the test's variant: still a report row
            verdict = gates.model_not_loaded(load_error)
            record["evaluations"].append(
                records.failure_entry(
                    item.stash[MARKS].spec, item.stash[MARKS].budget_bytes, verdict.kind, verdict.line
                )
            )
    deferred = item.stash.get(DEFERRED, [])
    if report.when == "setup" and report.skipped and deferred:
        # A gate breached in set-up (mmlu_result), then a later fixture skipped: the breach stands.
        report.outcome, report.longrepr = "failed", "\n".join(v.line for v in deferred)
    if (
        report.when == "call"
        and report.failed
        and str(report.longrepr).startswith("[XPASS(strict)]")
        and any(e.get("judged_at_merge") for e in record["evaluations"])
    ):
        # In a shard a strict xfail test passes for want of its deferred gates: whether it fails
        # is known at merge only, which judges it as the unsharded run does.
        report.outcome, report.wasxfail = "passed", str(report.longrepr).removeprefix("[XPASS(strict)] ")
        record["strict_xfail"] = True
    record["outcome"] = outcome(report, record["outcome"])
    if record["outcome"] in ("xfailed", "xpassed") and "xfail_excuses_gates" not in record:
        record["xfail_excuses_gates"] = xfail_excuses_gates(item)  # merge and compare ask
    if report.when == "teardown":
        record["outcome"] = record["outcome"] or "passed"
        report.pytest_mmlu_record = judge.apply(record, judged(item, record))  # type: ignore[attr-defined]


def xfail_excuses_gates(item: pytest.Item) -> bool:
    """Whether the test's xfail takes a failing gate as its expected failure, as it would in an
    unsharded run: an xfail mark that names no exception, or one that a gate's failure
    (``pytest.fail``) is. Not an imperative ``pytest.xfail()`` in the body: unsharded, the
    gate fails the test before its body runs."""
    if evaluate_xfail_marks is not None:
        xfailed = evaluate_xfail_marks(item)
        if xfailed is None:
            return False
        raises = xfailed.raises
    else:
        mark = item.get_closest_marker("xfail")
        if mark is None:
            return False
        raises = mark.kwargs.get("raises")
    if raises is None:
        return True
    gate_failure = pytest.fail.Exception("a gate", pytrace=False)
    if isinstance(raises, (type, tuple)):
        return isinstance(gate_failure, raises)
    return bool(raises.matches(gate_failure))  # pytest.RaisesExc


def unfinished(sess: MmluSession, nodeid: str, what: str) -> dict[str, Any]:
    """The record of an MMLU test that never finished (its worker crashed, or it never ran)."""
    record = records.new_record(nodeid, markers.ItemMarks.from_dict(sess.manifest[nodeid]))
    record["outcome"] = what
    return judge.apply(record, judge.judge_record(record))
