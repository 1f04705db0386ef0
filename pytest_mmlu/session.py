"""Per-run state: the model (loaded once, lazily), the data, and every evaluation made.

Records are plain dicts (``EvaluationResult.to_dict()`` plus the gate figures)
so that xdist workers can ship them to the controller unchanged.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from . import SCORING_VERSION, __version__
from .gates import budget_breach, floor_breaches
from .markers import EvalSpec, ItemMarks
from .results import EvaluationResult
from .settings import Settings


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
        progress = self._progress(item.nodeid)
        result = self.evaluator().evaluate(spec, marks.budget_bytes, progress=progress)
        self.record(item, result, marks)
        return result

    def record(self, item: pytest.Item, result: EvaluationResult, marks: ItemMarks) -> None:
        entry = result.to_dict()
        entry["floor"] = None if marks.floor is None else {
            "min": marks.floor.overall, "per_subject": dict(marks.floor.per_subject)}
        entry["breaches"] = [b for b in [budget_breach(result), *floor_breaches(result, marks.floor)] if b]
        rec = self.records.setdefault(item.nodeid, {"nodeid": item.nodeid, "outcome": None,
                                                    "evaluations": []})
        rec["evaluations"].append(entry)
        lo, hi = result.ci95
        for key, value in (("accuracy", round(result.accuracy, 6)), ("n", result.n),
                           ("ci95_low", round(lo, 6)), ("ci95_high", round(hi, 6)),
                           ("peak_memory_bytes", result.peak_memory_bytes),
                           ("budget_bytes", result.budget_bytes), ("batch_size", result.batch_size),
                           ("seconds", round(result.seconds, 3))):
            item.user_properties.append((f"mmlu_{key}", value))

    def record_failure(self, item: pytest.Item, spec: EvalSpec, marks: ItemMarks, message: str) -> None:
        """An evaluation that could not run (e.g. budget below batch 1): still a summary row."""
        entry = {"subjects": list(spec.subjects), "label": spec.label, "shots": spec.shots,
                 "limit": spec.limit, "n": 0, "accuracy": None, "ci95": None,
                 "peak_memory_bytes": None, "budget_bytes": marks.budget_bytes, "batch_size": 0,
                 "seconds": 0.0, "breaches": [message], "questions": []}
        self.records.setdefault(item.nodeid, {"nodeid": item.nodeid, "outcome": None,
                                              "evaluations": []})["evaluations"].append(entry)

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
        return {
            "schema": 1,
            "pytest_mmlu_version": __version__,
            "scoring_version": SCORING_VERSION,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "model": self.model_info,
            "data": self.settings.data,
            "tests": [self.records[k] for k in sorted(self.records)],
        }

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
