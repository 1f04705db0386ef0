"""pytest hooks and fixtures of pytest-mmlu: thin wrappers over the modules that do the work.

Loaded in every pytest run of the environment: only light modules are
imported here; torch, transformers and lm_eval load when a test needs a model.

Every MMLU test (one that declares an MMLU mark or asks for an MMLU fixture) has a record
(``records.py``) built while it runs (``evaluate.py``) and judged by the one judge
(``judge.py``); the record rides on the test's teardown report, so that the controller of an
xdist run receives it as the test ends (``xdist.py``), and ``Records`` keeps it, in one
process or many alike.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from . import evaluate, gates, markers, marks, records, settings, xdist
from .evaluate import DEFERRED, MARKS, RECORD, SESSION, fail, is_mmlu, run_evaluation
from .mmlu.results import EvaluationResult
from .models.errors import ModelLoadError
from .models.variants import FULL
from .outputs.finish import finish
from .outputs.header import header_lines
from .outputs.summary import summary_lines
from .session import MmluSession
from .text import wrapped

MARKS_SEEN = pytest.StashKey[tuple[str, ...]]()  # the MMLU marks' names at collection
NEEDS_MODEL = pytest.StashKey[bool]()  # an MMLU test collected without a model
REQUIRED = pytest.StashKey[str]()  # xdist worker: the missing-model error its MMLU tests fail with
SKIP_REASON = (
    "MMLU test needs a model: pass --mmlu-model=ORG/NAME (a Hugging Face id) or a "
    "local folder, or set PYTEST_MMLU_MODEL"
)


def pytest_addoption(parser: pytest.Parser) -> None:
    settings.add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    for doc in markers.marker_docs():
        config.addinivalue_line("markers", doc)
    sess = MmluSession(config, settings.resolve(config))
    config.stash[SESSION] = sess
    config.pluginmanager.register(Records(sess), "pytest_mmlu_records")
    if config.pluginmanager.hasplugin("xdist") and not xdist.is_worker(config):
        config.pluginmanager.register(xdist.Controller(sess), "pytest_mmlu_xdist")


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    sess = config.stash[SESSION]
    if not sess.settings.model:
        return None

    try:
        return header_lines(sess)
    except ModelLoadError as exc:  # e.g. --mmlu-device=cuda:3 on a machine with two GPUs
        raise pytest.UsageError(f"pytest-mmlu: {exc}") from None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    has_model = bool(config.stash[SESSION].settings.model)
    for item in items:
        item_marks = marks.read_item_marks(item)
        item.stash[MARKS] = item_marks
        item.stash[MARKS_SEEN] = marks.marks_on(item)
        fixturenames = getattr(item, "fixturenames", [])
        if item_marks.spec is not None and "mmlu_result" not in fixturenames:
            fixturenames.append("mmlu_result")  # the marker alone declares the evaluation
        if not has_model and is_mmlu(item):
            item.add_marker(pytest.mark.skip(reason=SKIP_REASON))
            item.stash[NEEDS_MODEL] = True
    if any(item.stash[MARKS].variant is not None for item in items):
        items[:] = _grouped_by_variant(config.stash[SESSION], items)


def _grouped_by_variant(sess: MmluSession, items: list[pytest.Item]) -> list[pytest.Item]:
    """Tests in order of their variant (the full model first, then as they first appear), each
    group in its own order: every variant's model is loaded once (one in memory at a time)."""

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
    sess.manifest = {
        item.nodeid: item.stash[MARKS].to_dict() for item in session.items if MARKS in item.stash and is_mmlu(item)
    }
    if not sess.settings.require_model or not evaluate.runs_tests(session.config):
        return
    n = sum(item.stash.get(NEEDS_MODEL, False) for item in session.items)
    if not n:
        return
    message = gates.model_required(n, sess.settings.source_of("require_model"))
    if xdist.is_worker(session.config):
        # An xdist worker's usage error is an INTERNALERROR traceback on the controller: each
        # test errors with the message instead (every worker collects all tests, so n is right).
        session.config.stash[REQUIRED] = message
        return
    raise pytest.UsageError(message)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    if MARKS in item.stash and is_mmlu(item):
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
    session = request.config.stash[SESSION]
    try:
        marks = request.node.stash.get(MARKS, None)
        return session.loaded_model(session.variant_of(marks.variant if marks is not None else None))
    except ModelLoadError as exc:
        fail([gates.error(exc)])


class MmluFixture:
    """``mmlu.evaluate(subjects, shots, limit)`` and ``mmlu.evaluate_task(name, shots, limit,
    metric)`` from a test body; the test's budget, floor and no-regression gates apply."""

    def __init__(self, item: pytest.Item) -> None:
        self._item = item

    def evaluate(
        self,
        subjects: Any = "all",
        shots: int = markers.EvalSpec.shots,
        limit: int | None = markers.EvalSpec.limit,
        *,
        quantization: str | None = None,
        adapter: Any = None,
        merge_adapter: bool | None = None,
    ) -> EvaluationResult:
        """``quantization``/``adapter``/``merge_adapter`` evaluate a variant of the model (unset:
        the test's ``mmlu_variant`` mark, else the session's)."""
        variant = {"quantization": quantization, "adapter": adapter, "merge_adapter": merge_adapter}
        return self._evaluate("evaluate", lambda: marks.make_eval_spec(subjects, shots, limit), variant)

    def evaluate_task(
        self,
        name: str,
        shots: int | None = markers.TaskSpec.shots,
        limit: int | float | None = markers.TaskSpec.limit,
        metric: str | None = markers.TaskSpec.metric,
        *,
        quantization: str | None = None,
        adapter: Any = None,
        merge_adapter: bool | None = None,
    ) -> EvaluationResult:
        """An lm-eval log-likelihood task or group, as ``@pytest.mark.lm_eval_task`` declares
        one; the test's gates judge its metric (``result.accuracy``; per task in
        ``result.per_subject``)."""
        variant = {"quantization": quantization, "adapter": adapter, "merge_adapter": merge_adapter}
        return self._evaluate("evaluate_task", lambda: marks.make_task_spec(name, shots, limit, metric), variant)

    def _evaluate(self, method: str, make_spec: Callable[[], Any], variant: dict[str, Any]) -> EvaluationResult:
        """The call's spec and variant checked (a bad one fails the test naming ``method``),
        evaluated and judged; a failing gate fails the test."""
        overrides = {k: v for k, v in variant.items() if v is not None}
        try:
            spec = make_spec()
            chosen = self._item.config.stash[SESSION].variant_of(self._item.stash[MARKS].variant, **overrides)
        except ValueError as exc:  # MarkerError too
            fail([gates.bad_evaluate_call(str(exc), method)])
        result, failures = run_evaluation(self._item, spec, chosen)
        if failures:
            fail(failures)
        assert result is not None  # an evaluation that could not run has its failing verdict
        return result


@pytest.fixture
def mmlu(request: pytest.FixtureRequest) -> MmluFixture:
    """Evaluate from the test body: ``mmlu.evaluate(subjects=..., shots=..., limit=...)``, or an
    lm-eval task: ``mmlu.evaluate_task(name, shots=..., limit=..., metric=...)``."""
    return MmluFixture(request.node)


@pytest.fixture
def mmlu_result(request: pytest.FixtureRequest) -> EvaluationResult | None:
    """The result of the evaluation declared by the test's ``@pytest.mark.mmlu`` or
    ``@pytest.mark.lm_eval_task``."""
    item = request.node
    spec = item.stash[MARKS].spec
    if spec is None:
        fail([gates.no_mmlu_marker()])
    result, failures = run_evaluation(item, spec)
    # Failing verdicts fail the test (not an error in setup): they are raised in the call phase.
    item.stash.setdefault(DEFERRED, []).extend(failures)
    return result


# -- test phases --------------------------------------------------------------------------------
@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    _no_late_marks(item)  # applied by a fixture
    deferred = item.stash.get(DEFERRED, [])
    if deferred:
        fail(deferred)
    result = yield
    _no_late_marks(item)  # applied in the body
    record = item.stash.get(RECORD, None)
    if record is not None:  # the test's own gates: one never evaluated, a floor left uncovered
        failing = [v for v in evaluate.judged(item, record).test if v.fails]
        if failing:
            fail(failing)
    return result


def _no_late_marks(item: pytest.Item) -> None:
    seen = item.stash.get(MARKS_SEEN, ())
    late = list(marks.marks_on(item))
    for name in seen:
        if name in late:
            late.remove(name)
    if late:
        fail([gates.late_marks(sorted(set(late)))])


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    if RECORD in item.stash:
        evaluate.track(item, report)
        xdist.ship_manifest(item.config, report, item.config.stash[SESSION])
    return report


class Records:
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
            self.sess.records[report.nodeid] = evaluate.unfinished(self.sess, report.nodeid, "crashed")


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    sess = config.stash[SESSION]
    if not evaluate.runs_tests(config):
        return
    lines = summary_lines(list(sess.records.values()))
    # Counted from the reporter's reports, so that an xdist controller counts its workers' skips.
    skipped = sum(_skipped_for_want_of_model(r) for r in terminalreporter.stats.get("skipped", []))
    notes = [*sess.notes, *([gates.skipped_without_model(skipped)] if skipped else [])]
    if lines or notes:
        terminalreporter.write_sep("=", "MMLU summary")
        for line in [*lines, *(part for note in notes for part in wrapped(note))]:
            terminalreporter.write_line(line)


def _skipped_for_want_of_model(report: Any) -> bool:
    longrepr = getattr(report, "longrepr", None)  # (path, line, "Skipped: reason") for a skip mark
    return isinstance(longrepr, (tuple, list)) and str(longrepr[-1]).endswith(SKIP_REASON)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    sess = config.stash[SESSION]
    if xdist.is_worker(config):
        xdist.ship_payload(config, sess)
        return
    if not evaluate.runs_tests(config) or exitstatus == pytest.ExitCode.USAGE_ERROR:
        return  # nothing was meant to run: no verdict to write
    for nodeid in sess.manifest:  # every MMLU test has a record, one that never ran too
        if nodeid not in sess.records:
            sess.records[nodeid] = evaluate.unfinished(sess, nodeid, "not run")
    if not finish(sess, exitstatus) and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED  # a run whose verdict was not written did not pass
