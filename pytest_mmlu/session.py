"""Per-run state: the model (loaded once, lazily), the data, and every evaluation made.

Records are plain dicts (``EvaluationResult.to_dict()`` plus the gate figures)
so that xdist workers can ship them to the controller unchanged.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from . import SCORING_VERSION, __version__
from .gates import budget_breach, floor_breaches
from .markers import EvalSpec, ItemMarks
from .results import EvaluationResult
from .settings import Settings


def _why(exc: Exception) -> str:
    """One line for an OSError (strerror and file), or the message of our own errors."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return str(exc)


class MmluSession:
    def __init__(self, config: pytest.Config, settings: Settings) -> None:
        self.config = config
        self.settings = settings
        self._loaded: Any = None
        self._load_error: str | None = None
        self._data: Any = None
        self._evaluator: Any = None
        self.model_info: dict[str, Any] | None = None
        self.records: dict[str, dict[str, Any]] = {}
        self.notes: list[str] = []  # printed at the end of the terminal summary
        self._baseline: Any = None
        self.cache: Any = None
        self._model_key: str | None | bool = False  # False: not computed yet
        cache_root = settings.cache_dir or (
            str(config.cache.mkdir("pytest-mmlu")) if getattr(config, "cache", None) else None)
        if cache_root and not settings.no_cache:
            from .cache import ResultCache

            self.cache = ResultCache(Path(cache_root))
            if settings.cache_dir and config.getoption("cacheclear", False):
                self.cache.clear()  # --cache-clear clears our folder too when it lives elsewhere

    # -- model and data, loaded on first use ----------------------------------------------------
    def loaded_model(self) -> Any:
        from .loading import ModelLoadError, load_model

        if self._load_error is not None:
            raise ModelLoadError(self._load_error)
        if self._loaded is None:
            try:
                self._loaded = load_model(self.settings)
            except ModelLoadError as exc:
                self._load_error = str(exc)
                raise
            lm = self._loaded
            self.model_info = {
                "name": lm.name, "model": self.settings.model, "revision": lm.revision,
                "commit": lm.commit, "dtype": lm.dtype, "device": lm.device,
                "weight_bytes": lm.weight_bytes, "load_seconds": round(lm.load_seconds, 3),
            }
        return self._loaded

    @property
    def load_error(self) -> str | None:
        """Why the model could not be loaded (once tried), else None."""
        return self._load_error

    def data(self) -> Any:
        from .data import MmluData

        if self._data is None:
            self._data = MmluData(self.settings.data)
        return self._data

    def evaluator(self) -> Any:
        from .evaluation import Evaluator

        if self._evaluator is None:
            self._evaluator = Evaluator(self.loaded_model(), self.data(), self.settings.batch_size)
        return self._evaluator

    # -- evaluations ----------------------------------------------------------------------------
    def evaluate(self, item: pytest.Item, spec: EvalSpec, marks: ItemMarks) -> EvaluationResult:
        key = self._cache_key(spec, marks.budget_bytes)
        result = self.cache.get(key) if key else None
        if result is None:
            progress = self._progress(item.nodeid)
            result = self.evaluator().evaluate(spec, marks.budget_bytes, progress=progress)
            if key:
                self.cache.put(key, result)
        self.record(item, result, marks)
        return result

    def _cache_key(self, spec: EvalSpec, budget: int | None) -> str | None:
        if self.cache is None:
            return None
        if self._model_key is False:
            found = self.cache.model_key(self.settings.model, self.settings.revision)
            self._model_key = found.key
            if found.note:  # e.g. the hub was unreachable: keyed by the local snapshot
                self.notes.append(found.note)
        if self._model_key is None:
            return None  # a hub model whose commit cannot be resolved: no caching
        from .loading import resolve_device, resolve_dtype

        device = resolve_device(self.settings.device)
        return self.cache.evaluation_key(
            self._model_key, device, data=self.data().fingerprint(spec.subjects),
            subjects=spec.subjects, shots=spec.shots, limit=spec.limit,
            dtype=resolve_dtype(self.settings.dtype, device), batch_size=self.settings.batch_size,
            budget=budget, trust_remote_code=self.settings.trust_remote_code,
            allow_pickle=self.settings.allow_pickle)

    def record(self, item: pytest.Item, result: EvaluationResult, marks: ItemMarks) -> None:
        entry = result.to_dict()
        entry["floor"] = None if marks.floor is None else {
            "min": marks.floor.overall, "per_subject": dict(marks.floor.per_subject)}
        entry["breaches"] = [b for b in [budget_breach(result), *floor_breaches(result, marks.floor)] if b]
        if marks.no_regression is not None:
            self._compare_with_baseline(item.nodeid, entry, marks)
        self._evaluations_of(item.nodeid).append(entry)
        lo, hi = result.ci95
        for key, value in (("accuracy", round(result.accuracy, 6)), ("n", result.n),
                           ("ci95_low", round(lo, 6)), ("ci95_high", round(hi, 6)),
                           ("peak_memory_bytes", result.peak_memory_bytes),
                           ("budget_bytes", result.budget_bytes), ("batch_size", result.batch_size),
                           ("seconds", round(result.seconds, 3)), ("from_cache", result.from_cache)):
            item.user_properties.append((f"mmlu_{key}", value))

    def _compare_with_baseline(self, nodeid: str, entry: dict[str, Any], marks: ItemMarks) -> None:
        from .baseline import HOW_TO_CREATE, Baseline

        if self.settings.update_baseline:
            entry["regression"] = {"verdict": "recorded", "line": None}
            return
        if not self.settings.baseline or not Path(self.settings.baseline).is_file():
            line = (f"MMLU baseline {self.settings.baseline} does not exist; {HOW_TO_CREATE}"
                    if self.settings.baseline else
                    f"@pytest.mark.mmlu_no_regression needs --mmlu-baseline PATH; {HOW_TO_CREATE}")
            entry["regression"] = {"verdict": "missing", "line": line}
            entry["breaches"].append(line)
            return
        if self._baseline is None:
            self._baseline = Baseline.load(self.settings.baseline)
        outcome = self._baseline.compare(nodeid, entry, marks.no_regression.max_drop,
                                         marks.no_regression.alpha)
        entry["regression"] = outcome.to_dict()
        if outcome.verdict in ("regressed", "missing"):
            entry["breaches"].append(outcome.line)

    def record_failure(self, item: pytest.Item, spec: EvalSpec | None, marks: ItemMarks,
                       message: str) -> None:
        """An evaluation that could not run (budget below batch 1, model or data error): still a
        summary and report row. ``spec`` is None when the test declared none (mmlu_model alone)."""
        entry = {"subjects": list(spec.subjects) if spec else [], "label": spec.label if spec else "-",
                 "shots": spec.shots if spec else None, "limit": spec.limit if spec else None, "n": 0, "accuracy": None, "ci95": None,
                 "peak_memory_bytes": None, "budget_bytes": marks.budget_bytes, "batch_size": 0,
                 "seconds": 0.0, "breaches": [message], "questions": []}
        self._evaluations_of(item.nodeid).append(entry)

    def _evaluations_of(self, nodeid: str) -> list[dict[str, Any]]:
        record = self.records.setdefault(nodeid, {"nodeid": nodeid, "outcome": None, "evaluations": []})
        return record["evaluations"]

    def set_outcome(self, nodeid: str, outcome: str) -> None:
        if nodeid in self.records:
            self.records[nodeid]["outcome"] = outcome

    def merge(self, payload: dict[str, Any]) -> None:
        """Take records shipped from an xdist worker."""
        self.records.update({r["nodeid"]: r for r in payload.get("records", [])})
        if self.model_info is None and payload.get("model"):
            self.model_info = payload["model"]

    def payload(self) -> dict[str, Any]:
        return {"records": list(self.records.values()), "model": self.model_info}

    def report(self) -> dict[str, Any]:
        model = self.model_info or {"model": self.settings.model, "revision": self.settings.revision,
                                    "loaded": False}
        return {
            "schema": 1,
            "pytest_mmlu_version": __version__,
            "scoring_version": SCORING_VERSION,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "model": model,
            "data": self.settings.data,
            "tests": [self.records[k] for k in sorted(self.records)],
        }

    def finish(self, exitstatus: int) -> bool:
        """End of the run (controller): report, baseline, GitHub summary, chart. False when a
        report or baseline that was asked for could not be written (said in the notes)."""
        from . import reports
        from .gates import output_not_written

        written = True
        records = list(self.records.values())
        if self.settings.report and records:
            try:
                reports.write_json_atomic(self.settings.report, self.report())
            except OSError as exc:  # checked at start-up; the disk can still change under a run
                self.notes.append(output_not_written("report", self.settings.report, _why(exc)))
                written = False
        if self.settings.update_baseline:
            if exitstatus != 0:
                self.notes.append(output_not_written("baseline", self.settings.baseline,
                                                     f"the run did not pass (exit status {int(exitstatus)})"))
            elif records:
                from .baseline import BaselineWriteError, write_baseline

                try:
                    n = write_baseline(self.settings.baseline, self.report())
                except (OSError, BaselineWriteError) as exc:
                    self.notes.append(output_not_written("baseline", self.settings.baseline, _why(exc)))
                    written = False
                else:
                    self.notes.append(f"pytest-mmlu: wrote baseline {self.settings.baseline}: {n} "
                                      f"evaluations from {len(records)} tests")
        improved = [e["regression"]["line"] for r in records for e in r["evaluations"]
                    if (e.get("regression") or {}).get("verdict") == "improved"]
        self.notes.extend(f"NOTE {line}" for line in improved)
        cached = sum(e.get("from_cache", False) for r in records for e in r["evaluations"])
        if cached:
            self.notes.append(f"pytest-mmlu: {cached} evaluation(s) served from the result cache "
                              f"({'model not loaded' if self._loaded is None else 'model loaded for the rest'})")
        summary_path = os.environ.get("GITHUB_STEP_SUMMARY")
        if summary_path and records:
            try:
                with open(summary_path, "a") as f:
                    f.write(reports.github_summary(records))
            except OSError as exc:
                self.notes.append(output_not_written("GitHub step summary", summary_path, _why(exc)))
        if self.settings.chart and records:
            try:
                reports.write_chart(self.settings.chart, records)
            except reports.ReportError as exc:
                self.notes.append(f"pytest-mmlu: chart not written: {exc}")
            except Exception as exc:  # noqa: BLE001 - a chart must never turn a gate's verdict into a crash
                self.notes.append(f"pytest-mmlu: chart not written: {type(exc).__name__}: {exc}")
        return written

    # -- progress -------------------------------------------------------------------------------
    def _progress(self, nodeid: str) -> Callable[[int, int], None] | None:
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        capture = self.config.pluginmanager.get_plugin("capturemanager")
        if reporter is None or self.config.get_verbosity() < 0:
            return None
        start = time.perf_counter()
        last = [start]

        def show(done: int, total: int) -> None:
            now = time.perf_counter()
            if now - last[0] < 5.0:
                return  # short evaluations print nothing; long ones a line every 5 s
            last[0] = now
            rate = done / max(now - start, 1e-9)
            line = f"[mmlu] {nodeid}: {done}/{total} questions, {rate:.1f} q/s"
            # Write around pytest's output capture, as the live-logging plugin does.
            if capture is not None:
                with capture.global_and_fixture_disabled():
                    reporter.write_line(line)
            else:
                reporter.write_line(line)

        return show
