"""pytest hooks and fixtures of pytest-mmlu: thin wrappers over the modules that do the work.

Loaded in every pytest run of the environment: only light modules are
imported here; torch, transformers and lm_eval load when a test needs a model.

Every MMLU test (one that declares an MMLU mark or asks for an MMLU fixture) has a record
(``records.py``) built while it runs and judged by ``gates.judge_record``; the record rides
on the test's teardown report (``pytest_mmlu_record``), so that the controller of an xdist
run receives it as the test ends, and ``pytest_runtest_logreport`` keeps it, in one process
or many alike.
"""

from __future__ import annotations

from typing import Any

import pytest

from . import gates, markers, outputs, records, settings
from .results import EvaluationResult
from .session import MmluSession

SESSION = pytest.StashKey[MmluSession]()
MARKS = pytest.StashKey[markers.ItemMarks]()
RECORD = pytest.StashKey[dict]()  # the test's record while it runs
DEFERRED = pytest.StashKey[list]()  # failing verdicts found during setup, raised in the call phase
NEEDS_MODEL = pytest.StashKey[bool]()  # an MMLU test collected without a model
REQUIRED = pytest.StashKey[str]()  # xdist worker: the missing-model error its MMLU tests fail with
MANIFEST_SENT = pytest.StashKey[bool]()  # xdist worker: the manifest rode on a report already
MMLU_FIXTURES = {"mmlu", "mmlu_result", "mmlu_model"}
SKIP_REASON = ("MMLU test needs a model: pass --mmlu-model=ORG/NAME (a Hugging Face id) or a "
               "local folder, or set PYTEST_MMLU_MODEL")


def pytest_addoption(parser: pytest.Parser) -> None:
    settings.add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    for doc in markers.marker_docs():
        config.addinivalue_line("markers", doc)
    sess = MmluSession(config, settings.resolve(config))
    config.stash[SESSION] = sess
    config.pluginmanager.register(_Records(sess), "pytest_mmlu_records")
    if config.pluginmanager.hasplugin("xdist") and not hasattr(config, "workerinput"):
        config.pluginmanager.register(_XdistController(sess), "pytest_mmlu_xdist")


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    sess = config.stash[SESSION]
    if not sess.settings.model:
        return None
    from .loading import ModelLoadError, resolve_device, variant_lines
    from .memory import make_meter

    try:
        device = resolve_device(sess.settings.device)
        text = make_meter(device).describe()
    except ModelLoadError as exc:
        raise pytest.UsageError(f"pytest-mmlu: {exc}") from None
    try:
        dtype = sess.load_plan().dtype
    except ModelLoadError:
        dtype = None  # the tests that need the model fail, saying why
    from .reports import header_lines

    return [*header_lines(sess.settings, text, dtype), *variant_lines(sess.settings)]


def _is_mmlu(item: pytest.Item) -> bool:
    return item.stash[MARKS].uses_mmlu or bool(MMLU_FIXTURES & set(getattr(item, "fixturenames", ())))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    has_model = bool(config.stash[SESSION].settings.model)
    for item in items:
        item_marks = markers.read_item_marks(item)
        item.stash[MARKS] = item_marks
        fixturenames = getattr(item, "fixturenames", [])
        if item_marks.spec is not None and "mmlu_result" not in fixturenames:
            fixturenames.append("mmlu_result")  # the marker alone declares the evaluation
        if not has_model and _is_mmlu(item):
            item.add_marker(pytest.mark.skip(reason=SKIP_REASON))
            item.stash[NEEDS_MODEL] = True
    if any(item.stash[MARKS].variant is not None for item in items):
        items[:] = _grouped_by_variant(config.stash[SESSION], items)


def _grouped_by_variant(sess: MmluSession, items: list[pytest.Item]) -> list[pytest.Item]:
    """Tests in order of their variant (the full model first, then as they first appear), each
    group in its own order: every variant's model is loaded once (one in memory at a time)."""
    from .variants import FULL

    ranks: dict[Any, int] = {FULL: 0}

    def rank(item: pytest.Item) -> int:
        try:
            variant = sess.variant_of(item.stash[MARKS].variant)
        except ValueError:
            return 0  # an invalid combination fails when the test runs, saying why
        return ranks.setdefault(variant, len(ranks))

    return sorted(items, key=rank)


def pytest_collection_finish(session: pytest.Session) -> None:
    # After deselection (-k, -m): only the MMLU tests that would run count.
    sess = session.config.stash[SESSION]
    sess.manifest = {item.nodeid: item.stash[MARKS].to_dict() for item in session.items
                     if MARKS in item.stash and _is_mmlu(item)}
    if not sess.settings.require_model or session.config.option.collectonly:
        return
    n = sum(item.stash.get(NEEDS_MODEL, False) for item in session.items)
    if not n:
        return
    message = gates.model_required(n, sess.settings.source_of("require_model"))
    if hasattr(session.config, "workerinput"):
        # An xdist worker's usage error is an INTERNALERROR traceback on the controller: each
        # test errors with the message instead (every worker collects all tests, so n is right).
        session.config.stash[REQUIRED] = message
        return
    raise pytest.UsageError(message)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    if MARKS in item.stash and _is_mmlu(item):
        item.stash[RECORD] = records.new_record(item.nodeid, item.stash[MARKS])
    message = item.config.stash.get(REQUIRED, None)
    if message and item.stash.get(NEEDS_MODEL, False):
        pytest.fail(message, pytrace=False)  # before the skip mark is evaluated


# -- fixtures -----------------------------------------------------------------------------------
@pytest.fixture
def mmlu_model(request: pytest.FixtureRequest) -> Any:
    """The model under test as the test's ``mmlu_variant`` (a LoadedModel: model, tokenizer,
    device, dtype, load_seconds, weight_bytes), loaded once per variant and session (once per
    xdist worker).  Per test, not per session: a session-scoped value would keep a variant's
    model alive after the session released it for the next, and inflate that one's budget."""
    from .loading import ModelLoadError

    session = request.config.stash[SESSION]
    try:
        marks = request.node.stash.get(MARKS, None)
        return session.loaded_model(session.variant_of(marks.variant if marks is not None else None))
    except ModelLoadError as exc:
        _fail([gates.error(exc)])


class MmluFixture:
    """``mmlu.evaluate(subjects=..., shots=5, limit=None)``; the test's budget and floor apply."""

    def __init__(self, item: pytest.Item) -> None:
        self._item = item

    def evaluate(self, subjects: Any = "all", shots: int = 5, limit: int | None = None, *,
                 quantization: str | None = None, adapter: Any = None,
                 merge_adapter: bool | None = None) -> EvaluationResult:
        """``quantization``/``adapter``/``merge_adapter`` evaluate a variant of the model (unset:
        the test's ``mmlu_variant`` mark, else the session's)."""
        overrides = {k: v for k, v in (("quantization", quantization), ("adapter", adapter),
                                       ("merge_adapter", merge_adapter)) if v is not None}
        try:
            spec = markers.make_eval_spec(subjects, shots, limit)
            variant = self._item.config.stash[SESSION].variant_of(self._item.stash[MARKS].variant, **overrides)
        except ValueError as exc:  # MarkerError too
            _fail([gates.bad_evaluate_call(str(exc))])
        result, failures = _run_evaluation(self._item, spec, variant)
        if failures:
            _fail(failures)
        return result


@pytest.fixture
def mmlu(request: pytest.FixtureRequest) -> MmluFixture:
    """Evaluate MMLU from the test body: ``mmlu.evaluate(subjects=..., shots=..., limit=...)``."""
    return MmluFixture(request.node)


@pytest.fixture
def mmlu_result(request: pytest.FixtureRequest) -> EvaluationResult | None:
    """The result of the evaluation declared by the test's ``@pytest.mark.mmlu``."""
    item = request.node
    spec = item.stash[MARKS].spec
    if spec is None:
        _fail([gates.no_mmlu_marker()])
    result, failures = _run_evaluation(item, spec)
    # Failing verdicts fail the test (not an error in setup): they are raised in the call phase.
    item.stash.setdefault(DEFERRED, []).extend(failures)
    return result


def _run_evaluation(item: pytest.Item, spec: markers.EvalSpec, variant: Any = None,
                    ) -> tuple[EvaluationResult | None, list[gates.Verdict]]:
    """Evaluate (or read from the cache), record, judge; return the result and its failing
    verdicts. A ``mmlu_no_regression(against="full")`` gate's reference (the full model on the
    same questions) is recorded first, beside the evaluation it is compared with."""
    from .data import DataError
    from .loading import ModelLoadError
    from .memory import BudgetTooSmall, MeterUnavailable, OutOfMemory

    sess = item.config.stash[SESSION]
    item_marks = item.stash[MARKS]
    record = item.stash[RECORD]
    shown = outputs.progress(item.config, item.nodeid)
    if variant is None:  # the test's mark (mmlu_result); mmlu.evaluate passes its own
        try:
            variant = sess.variant_of(item_marks.variant)
        except ValueError as exc:  # e.g. merge_adapter=True with no adapter anywhere
            _fail([gates.bad_variant(str(exc))])
    try:
        if any(r.against == "full" for r in item_marks.no_regressions) and not variant.is_full:
            if records.reference_for(record["evaluations"], spec.to_dict()) is None:
                record["evaluations"].append(_entry(sess, sess.full_result(spec), spec, records.REFERENCE))
        result = sess.evaluate(spec, item_marks.budget_bytes, shown, variant=variant)
    except (BudgetTooSmall, OutOfMemory, MeterUnavailable, DataError, ModelLoadError) as exc:
        verdict = gates.error(exc)
        record["evaluations"].append(records.failure_entry(  # a report row, not a gap
            spec, item_marks.budget_bytes, verdict.kind, verdict.line, _identity_if_known(sess, spec, variant)))
        if verdict.kind == "error":
            _fail([verdict])  # no model or no data: stop now (an error in setup, a failure in the body)
        return None, [verdict]  # a budget below batch 1 fails like any other gate
    finally:
        if shown is not None:
            shown.close()
    record["evaluations"].append(_entry(sess, result, spec))
    baseline = sess.baseline() if _compares_with_baseline(item_marks, sess) else None
    judgement = gates.judge_record(record, baseline, final=False)
    item.stash[RECORD] = gates.apply(record, judgement)
    item.user_properties.extend(outputs.junit_properties(result))
    failing = [v for v in judgement.evaluations[-1] if v.fails]
    if any(v.kind in ("non-finite", "error") for v in failing):
        _fail(failing)  # no answer, or a misused gate: an error in setup (the marker), a failure in the body
    return result, failing


def _identity_if_known(sess: MmluSession, spec: markers.EvalSpec, variant: Any) -> dict[str, Any] | None:
    """What an evaluation that could not run would have been, where that can be known."""
    from .data import DataError
    from .loading import ModelLoadError

    try:
        return sess.identity(spec, variant)
    except (DataError, ModelLoadError):
        return None


def _entry(sess: MmluSession, result: EvaluationResult, spec: markers.EvalSpec, role: str | None = None,
           ) -> dict[str, Any]:
    entry = result.to_dict()
    if role is not None:
        entry["role"] = role
    if sess.settings.shard is not None:  # merge judges the whole, and checks it holds all of it
        entry["shard"] = str(sess.settings.shard)
        entry["unsharded_n"] = sess.unsharded_count(spec)
    return entry


def _compares_with_baseline(item_marks: markers.ItemMarks, sess: MmluSession) -> bool:
    return sess.settings.shard is None and any(r.against == "baseline" for r in item_marks.no_regressions)


def _fail(verdicts: list[gates.Verdict]) -> None:
    pytest.fail("\n".join(v.line for v in verdicts), pytrace=False)


# -- test phases --------------------------------------------------------------------------------
@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    deferred = item.stash.get(DEFERRED, [])
    if deferred:
        _fail(deferred)
    result = yield
    record = item.stash.get(RECORD, None)
    if record is not None:  # the test's own gates: one never evaluated, a floor left uncovered
        failing = [v for v in _judged(item, record).test if v.fails]
        if failing:
            _fail(failing)
    return result


def _judged(item: pytest.Item, record: dict[str, Any]) -> gates.Judgement:
    sess = item.config.stash[SESSION]
    baseline = sess.baseline() if _compares_with_baseline(item.stash[MARKS], sess) else None
    return gates.judge_record(record, baseline)


def _outcome(report: pytest.TestReport, before: str | None) -> str | None:
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


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    sess = item.config.stash[SESSION]
    record = item.stash.get(RECORD, None)
    if record is None:
        return report
    if (report.when == "setup" and report.failed and "mmlu_model" in getattr(item, "fixturenames", ())
            and not record["evaluations"]):
        load_error = sess.load_error_of(item.stash[MARKS].variant)
        if load_error is not None:  # mmlu_model could not load the test's variant: still a report row
            verdict = gates.model_not_loaded(load_error)
            record["evaluations"].append(records.failure_entry(
                item.stash[MARKS].spec, item.stash[MARKS].budget_bytes, verdict.kind, verdict.line))
    deferred = item.stash.get(DEFERRED, [])
    if report.when == "setup" and report.skipped and deferred:
        # A gate breached in set-up (mmlu_result), then a later fixture skipped: the breach stands.
        report.outcome, report.longrepr = "failed", "\n".join(v.line for v in deferred)
    if (report.when == "call" and report.failed and str(report.longrepr).startswith("[XPASS(strict)]")
            and any(e.get("judged_at_merge") for e in record["evaluations"])):
        # In a shard a strict xfail test passes for want of its deferred gates: whether it fails
        # is known at merge only, which judges it as the unsharded run does.
        report.outcome, report.wasxfail = "passed", str(report.longrepr).removeprefix("[XPASS(strict)] ")
        record["strict_xfail"] = True
    record["outcome"] = _outcome(report, record["outcome"])
    if report.when == "teardown":
        record["outcome"] = record["outcome"] or "passed"
        report.pytest_mmlu_record = gates.apply(record, _judged(item, record))
    if hasattr(item.config, "workerinput") and not item.config.stash.get(MANIFEST_SENT, False):
        report.pytest_mmlu_manifest = sess.manifest  # the controller collects nothing itself
        item.config.stash[MANIFEST_SENT] = True
    return report


class _Records:
    """Keeps each test's record as its report arrives: from this process, or from an xdist
    worker (for a worker that crashed, xdist makes a report: the record says so)."""

    def __init__(self, sess: MmluSession) -> None:
        self.sess = sess

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        manifest = getattr(report, "pytest_mmlu_manifest", None)
        if manifest:
            self.sess.manifest.update(manifest)
        record = getattr(report, "pytest_mmlu_record", None)
        if record is not None:
            self.sess.records[report.nodeid] = record
        elif report.when == "???" and report.nodeid in self.sess.manifest:  # pytest-xdist's crash report
            self.sess.records[report.nodeid] = _unfinished(self.sess, report.nodeid, "crashed")


def _unfinished(sess: MmluSession, nodeid: str, outcome: str) -> dict[str, Any]:
    """The record of an MMLU test that never finished (its worker crashed, or it never ran)."""
    record = records.new_record(nodeid, markers.ItemMarks.from_dict(sess.manifest[nodeid]))
    record["outcome"] = outcome
    return gates.apply(record, gates.judge_record(record))


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    sess = config.stash[SESSION]
    lines = outputs.summary_lines(list(sess.records.values()))
    # Counted from the reporter's reports, so that an xdist controller counts its workers' skips.
    skipped = sum(_skipped_for_want_of_model(r) for r in terminalreporter.stats.get("skipped", []))
    notes = [*sess.notes, *([gates.skipped_without_model(skipped)] if skipped else [])]
    if lines or notes:
        terminalreporter.write_sep("=", "MMLU summary")
        for line in [*lines, *(part for note in notes for part in outputs.wrapped(note))]:
            terminalreporter.write_line(line)


def _skipped_for_want_of_model(report: Any) -> bool:
    longrepr = getattr(report, "longrepr", None)  # (path, line, "Skipped: reason") for a skip mark
    return isinstance(longrepr, (tuple, list)) and str(longrepr[-1]).endswith(SKIP_REASON)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    sess = config.stash[SESSION]
    if hasattr(config, "workerinput"):  # xdist worker: ship the model entry and notes
        config.workeroutput["pytest_mmlu"] = sess.payload()
        return
    if config.option.collectonly or exitstatus == pytest.ExitCode.USAGE_ERROR:
        return  # nothing was meant to run: no verdict to write
    for nodeid in sess.manifest:  # every MMLU test has a record, one that never ran too
        if nodeid not in sess.records:
            sess.records[nodeid] = _unfinished(sess, nodeid, "not run")
    if not outputs.finish(sess, exitstatus) and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED  # a run whose verdict was not written did not pass


class _XdistController:
    """Collects the model entry and notes that xdist workers ship at their end (as pytest-cov
    does); records arrive with each test's report."""

    def __init__(self, sess: MmluSession) -> None:
        self.sess = sess

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        payload = getattr(node, "workeroutput", {}).get("pytest_mmlu")
        if payload:
            self.sess.merge(payload)
