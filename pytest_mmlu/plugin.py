"""pytest hooks and fixtures of pytest-mmlu: thin wrappers over the modules that do the work.

Loaded in every pytest run of the environment: only light modules are
imported here; torch, transformers and lm_eval load when a test needs a model.
"""

from __future__ import annotations

from typing import Any

import pytest

from . import gates, markers, outputs, reports, settings
from .results import EvaluationResult
from .session import MmluSession

SESSION = pytest.StashKey[MmluSession]()
MARKS = pytest.StashKey[markers.ItemMarks]()
DEFERRED = pytest.StashKey[list]()  # failing verdicts found during setup, raised in the call phase
EVALUATED = pytest.StashKey[list]()  # the test's evaluations: a result, or None where one could not run
NEEDS_MODEL = pytest.StashKey[bool]()  # an MMLU test collected without a model
REQUIRED = pytest.StashKey[str]()  # xdist worker: the missing-model error its MMLU tests fail with
MMLU_FIXTURES = {"mmlu", "mmlu_result", "mmlu_model"}
SKIP_REASON = ("MMLU test needs a model: pass --mmlu-model=ORG/NAME (a Hugging Face id) or a "
               "local folder, or set PYTEST_MMLU_MODEL")


def pytest_addoption(parser: pytest.Parser) -> None:
    settings.add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    for doc in markers.MARKER_DOCS:
        config.addinivalue_line("markers", doc)
    sess = MmluSession(config, settings.resolve(config))
    config.stash[SESSION] = sess
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_XdistController(sess), "pytest_mmlu_xdist")


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    sess = config.stash[SESSION]
    if not sess.settings.model:
        return None
    from .loading import ModelLoadError, resolve_device, resolve_dtype
    from .memory import make_meter

    try:
        device = resolve_device(sess.settings.device)
        text = make_meter(device).describe()
        dtype = resolve_dtype(sess.settings.dtype, device, sess.settings.model, sess.settings.revision)
    except ModelLoadError as exc:
        raise pytest.UsageError(f"pytest-mmlu: {exc}") from None
    from .loading import variant_lines

    return [*reports.header_lines(sess.settings, text, dtype), *variant_lines(sess.settings)]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    has_model = bool(config.stash[SESSION].settings.model)
    for item in items:
        item_marks = markers.read_item_marks(item)
        item.stash[MARKS] = item_marks
        fixturenames = getattr(item, "fixturenames", [])
        if item_marks.spec is not None and "mmlu_result" not in fixturenames:
            fixturenames.append("mmlu_result")  # the marker alone declares the evaluation
        if not has_model and (item_marks.uses_mmlu or MMLU_FIXTURES & set(fixturenames)):
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
    mmlu_settings = session.config.stash[SESSION].settings
    if not mmlu_settings.require_model or session.config.option.collectonly:
        return
    n = sum(item.stash.get(NEEDS_MODEL, False) for item in session.items)
    if not n:
        return
    message = gates.model_required(n, mmlu_settings.source_of("require_model"))
    if hasattr(session.config, "workerinput"):
        # An xdist worker's usage error is an INTERNALERROR traceback on the controller: each
        # test errors with the message instead (every worker collects all tests, so n is right).
        session.config.stash[REQUIRED] = message
        return
    raise pytest.UsageError(message)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
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
    """Evaluate (or read from the cache), judge, record; return the result and its failing verdicts."""
    from .data import DataError
    from .loading import ModelLoadError
    from .memory import BudgetTooSmall, MeterUnavailable, OutOfMemory

    sess = item.config.stash[SESSION]
    item_marks = item.stash[MARKS]
    evaluated = item.stash.setdefault(EVALUATED, [])
    shown = outputs.progress(item.config, item.nodeid)
    if variant is None:  # the test's mark (mmlu_result); mmlu.evaluate passes its own
        try:
            variant = sess.variant_of(item_marks.variant)
        except ValueError as exc:  # e.g. merge_adapter=True with no adapter anywhere
            _fail([gates.bad_variant(str(exc))])
    try:
        full = _full_reference(sess, spec, item_marks, variant)
        result = sess.evaluate(spec, item_marks.budget_bytes, shown, variant=variant)
    except (BudgetTooSmall, OutOfMemory, MeterUnavailable, DataError, ModelLoadError) as exc:
        verdict = gates.error(exc)
        sess.record_failure(item.nodeid, spec, item_marks, verdict)  # a report row, not a silent gap
        evaluated.append(None)
        if verdict.kind == "error":
            _fail([verdict])  # no model or no data: stop now (an error in setup, a failure in the body)
        return None, [verdict]  # a budget below batch 1 fails like any other gate
    finally:
        if shown is not None:
            shown.close()
    shard = sess.settings.shard  # in a CI shard, floors and no-regression are judged at merge
    baseline = sess.baseline() if item_marks.no_regression is not None and shard is None else None
    verdicts = gates.judge(item.nodeid, result, item_marks, baseline, shard=shard, full=full)
    sess.record(item.nodeid, result, item_marks, verdicts)
    item.user_properties.extend(outputs.junit_properties(result))
    evaluated.append(result)
    failing = [v for v in verdicts if v.fails]
    if any(v.kind == "non-finite" for v in failing):
        _fail(failing)  # no answer to judge: an error in setup (the marker), a failure in the body
    return result, failing


def _full_reference(sess: MmluSession, spec: markers.EvalSpec, item_marks: markers.ItemMarks,
                    variant: Any) -> EvaluationResult | None:
    """For ``mmlu_no_regression(against="full")``: the full model's result on the same questions
    (this session's, else evaluated now, before the variant's model is loaded)."""
    rule = item_marks.no_regression
    if rule is None or rule.against != "full" or sess.settings.shard is not None:
        return None
    if variant.is_full:
        _fail([gates.against_full_without_variant()])
    return sess.full_result(spec)


def _fail(verdicts: list[gates.Verdict]) -> None:
    pytest.fail("\n".join(v.line for v in verdicts), pytrace=False)


# -- test phases --------------------------------------------------------------------------------
@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    deferred = item.stash.get(DEFERRED, [])
    if deferred:
        _fail(deferred)
    result = yield
    item_marks = item.stash.get(MARKS, None)
    if item_marks is not None and item_marks.uses_mmlu:
        evaluated = item.stash.get(EVALUATED, [])
        if not evaluated:
            _fail([gates.no_evaluation()])
        problems = gates.floor_uncovered([r for r in evaluated if r is not None and r.n], item_marks.floor)
        if problems:
            _fail(problems)
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    sess = item.config.stash[SESSION]
    if (report.when == "setup" and report.failed and "mmlu_model" in getattr(item, "fixturenames", ())
            and not item.stash.get(EVALUATED, None)):
        load_error = sess.load_error_of(item.stash[MARKS].variant)
        if load_error is not None:  # mmlu_model could not load the test's variant: still a report row
            sess.record_failure(item.nodeid, item.stash[MARKS].spec, item.stash[MARKS],
                                gates.model_not_loaded(load_error))
    if report.when == "call" or (report.when == "setup" and not report.passed):
        outcome = report.outcome if report.when == "call" else (
            "skipped" if report.skipped else "error")
        sess.set_outcome(item.nodeid, outcome)
    return report


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
    if hasattr(config, "workerinput"):  # xdist worker: ship records and notes to the controller
        config.workeroutput["pytest_mmlu"] = sess.payload()
        return
    if not outputs.finish(sess, exitstatus) and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED  # a run whose verdict was not written did not pass


class _XdistController:
    """Collects the records and notes that xdist workers ship at their end (as pytest-cov does)."""

    def __init__(self, sess: MmluSession) -> None:
        self.sess = sess

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        payload = getattr(node, "workeroutput", {}).get("pytest_mmlu")
        if payload:
            self.sess.merge(payload)
