"""Per-run state: the model (loaded once, lazily), the data, the result cache, the baseline,
and the record of every evaluation made. Verdicts are judged in ``gates.py``; what the run
emits is written by ``outputs.py``.

Records are plain dicts (``EvaluationResult.to_dict()`` plus the gates' figures and lines)
so that xdist workers can ship them to the controller unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .markers import EvalSpec, ItemMarks
from .results import EvaluationResult
from .settings import Settings
from .variants import FULL, Variant, make_variant, session_variant

if TYPE_CHECKING:
    from .baseline import Baseline
    from .gates import Verdict

PAYLOAD_VERSION = 1  # what an xdist worker ships; bump on a change of shape


class MmluSession:
    def __init__(self, config: pytest.Config, settings: Settings) -> None:
        self.config = config
        self.settings = settings
        self._loaded: Any = None
        self._load_errors: dict[Variant, str] = {}  # per variant: a failed load is not retried
        self.full_results: dict[tuple, EvaluationResult] = {}  # for no-regression against="full"
        self._data: Any = None
        self._evaluator: Any = None
        self.model_info: dict[str, Any] | None = None
        self.records: dict[str, dict[str, Any]] = {}
        self.notes: list[str] = []  # printed at the end of the terminal summary
        self._baseline: Baseline | None = None
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
    @property
    def variant(self) -> Variant:
        """The variant the session's options name; tests may evaluate others (``variant_of``)."""
        return session_variant(self.settings)

    def variant_of(self, mark: Any = None, **overrides: Any) -> Variant:
        """The session's variant with a test's ``mmlu_variant`` mark and call arguments applied."""
        variant = self.variant
        if mark is not None:
            variant = make_variant(variant, mark.quantization, mark.adapter, mark.merge_adapter)
        return make_variant(variant, **overrides) if overrides else variant

    def loaded_model(self, variant: Variant | None = None) -> Any:
        """The model as ``variant`` (default: the session's). One model is in memory at a time:
        another variant's is released first, so that each evaluation's budget sees one model."""
        from .loading import ModelLoadError, load_model

        variant = self.variant if variant is None else variant
        if variant in self._load_errors:
            raise ModelLoadError(self._load_errors[variant])
        if self._loaded is not None and self._loaded.variant != variant:
            self.release_model()
        if self._loaded is None:
            try:
                self._loaded = load_model(self.settings, variant)
            except ModelLoadError as exc:
                self._load_errors[variant] = str(exc)
                raise
            info = {"model": self.settings.model, **self._loaded.describe()}
            others = (self.model_info or {}).get("variants", {})
            if variant == self.variant:
                self.model_info = {**info, **({"variants": others} if others else {})}
            else:  # the report's model entry lists every variant loaded
                self.model_info = {**(self.model_info or {"model": self.settings.model}),
                                   "variants": {**others, variant.label: info}}
        return self._loaded

    def release_model(self) -> None:
        """Drop the loaded model (and its evaluator) and give its memory back."""
        from .memory import release_memory

        if self._loaded is not None:
            device = self._loaded.device
            self._loaded = self._evaluator = None
            release_memory(device)

    @property
    def model_loaded(self) -> bool:
        return self._loaded is not None

    def load_error_of(self, mark: Any = None) -> str | None:
        """Why the model, as the variant a test's ``mmlu_variant`` mark names, could not be
        loaded (once tried), else None."""
        try:
            return self._load_errors.get(self.variant_of(mark))
        except ValueError:  # a bad variant: its own error, not a load error
            return None

    def data(self) -> Any:
        from .data import MmluData

        if self._data is None:
            self._data = MmluData(self.settings.data)
        return self._data

    def evaluator(self, variant: Variant | None = None) -> Any:
        from .evaluation import Evaluator

        loaded = self.loaded_model(variant)
        if self._evaluator is None or self._evaluator.loaded is not loaded:
            from .chat import prompt_format_of

            self._evaluator = Evaluator(loaded, self.evaluated_data(), self.settings.batch_size,
                                        prompt_format_of(self.settings))
        return self._evaluator

    def evaluated_data(self) -> Any:
        """The questions this job evaluates: all of them, or its shard's (``--mmlu-shard``)."""
        from .shards import ShardedData

        shard = self.settings.shard
        return self.data() if shard is None else ShardedData(self.data(), shard)

    # -- evaluations ----------------------------------------------------------------------------
    def evaluate(self, spec: EvalSpec, budget: int | None,
                 progress: Callable[[int, int], None] | None = None,
                 variant: Variant | None = None) -> EvaluationResult:
        """The result of ``spec`` under ``budget`` on ``variant`` (default: the session's): from
        the result cache, else evaluated."""
        variant = self.variant if variant is None else variant
        key = self._cache_key(spec, budget, variant)
        result = self.cache.get(key) if key else None
        if result is None and self.settings.shard is not None and not self._shard_has_questions(spec):
            from .shards import empty_result

            return empty_result(spec, budget, self.data())  # nothing of this evaluation is ours
        if result is None:
            result = self.evaluator(variant).evaluate(spec, budget, progress=progress)
            if key:
                self.cache.put(key, result)
        if variant.is_full:
            self.full_results.setdefault(spec.key(), result)
        return result

    def full_result(self, spec: EvalSpec) -> EvaluationResult:
        """The full-precision model's result on ``spec``: this session's, else evaluated now."""
        found = self.full_results.get(spec.key())
        return found if found is not None else self.evaluate(spec, None, variant=FULL)

    def _shard_has_questions(self, spec: EvalSpec) -> bool:
        data = self.evaluated_data()
        return any(data.test_questions(s, spec.limit) for s in spec.subjects)

    def _cache_key(self, spec: EvalSpec, budget: int | None, variant: Variant = FULL) -> str | None:
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
            dtype=resolve_dtype(self.settings.dtype, device, self.settings.model, self.settings.revision),
            batch_size=self.settings.batch_size, **self._variant_key(variant),
            budget=budget, trust_remote_code=self.settings.trust_remote_code,
            allow_pickle=self.settings.allow_pickle,
            **({} if self.settings.shard is None else {"shard": str(self.settings.shard)}),
            # The template's text is in the model's files (hashed above); these choose how it is used.
            **self._prompt_key())

    def _prompt_key(self) -> dict[str, Any]:
        from .chat import prompt_format_of

        described = prompt_format_of(self.settings).describe(None)  # None: plain, as before
        return {} if described is None else {"prompt_format": described}

    def _variant_key(self, variant: Variant) -> dict[str, Any]:
        """What a variant and the placement add to the key: nothing for the plain model on one
        device (keys made before variants existed still match); the adapter by its files."""
        parts: dict[str, Any] = {}
        if variant.quantization != "none":
            parts["quantization"] = variant.quantization
        if variant.adapter is not None:
            parts["adapter"] = self.cache.model_key(variant.adapter, None).key
            parts["merge_adapter"] = variant.merge_adapter
        if self.settings.device_map != "fit":
            parts["device_map"] = self.settings.device_map
        return parts

    def baseline(self) -> Baseline:
        """The baseline this run compares with (read once), or why there is none."""
        from .baseline import Baseline

        if self._baseline is None:
            path = self.settings.baseline
            if self.settings.update_baseline:
                self._baseline = Baseline(None, path, recording=True)
            elif path and Path(path).exists():
                from .baseline import load_baseline

                self._baseline = load_baseline(path, self.data())
            else:
                self._baseline = Baseline(None, path or None)
        return self._baseline

    # -- records --------------------------------------------------------------------------------
    def record(self, nodeid: str, result: EvaluationResult, marks: ItemMarks,
               verdicts: list[Verdict]) -> None:
        """One evaluation and what the gates concluded, as the report's entry."""
        from .reports import evaluation_entry

        entry = evaluation_entry(result, marks, verdicts)
        if self.settings.shard is not None:  # merge checks that the shards hold all of it
            entry["unsharded_n"] = self.evaluated_data().unsharded_count(result.subjects, result.limit)
        self._evaluations_of(nodeid).append(entry)

    def record_failure(self, nodeid: str, spec: EvalSpec | None, marks: ItemMarks,
                       verdict: Verdict) -> None:
        """An evaluation that could not run (budget below batch 1, model or data error): still a
        summary and report row. ``spec`` is None when the test declared none (mmlu_model alone)."""
        entry = {"subjects": list(spec.subjects) if spec else [], "label": spec.label if spec else "-",
                 "shots": spec.shots if spec else None, "limit": spec.limit if spec else None,
                 "n": 0, "accuracy": None, "ci95": None, "peak_memory_bytes": None,
                 "budget_bytes": marks.budget_bytes, "batch_size": 0, "seconds": 0.0,
                 "breaches": [verdict.line], "questions": []}
        self._evaluations_of(nodeid).append(entry)

    def _evaluations_of(self, nodeid: str) -> list[dict[str, Any]]:
        record = self.records.setdefault(nodeid, {"nodeid": nodeid, "outcome": None, "evaluations": []})
        return record["evaluations"]

    def set_outcome(self, nodeid: str, outcome: str) -> None:
        if nodeid in self.records:
            self.records[nodeid]["outcome"] = outcome

    # -- xdist: a worker ships its records and notes, the controller merges them ---------------
    def payload(self) -> dict[str, Any]:
        return {"version": PAYLOAD_VERSION, "records": list(self.records.values()),
                "model": self.model_info, "notes": list(self.notes)}

    def merge(self, payload: dict[str, Any]) -> None:
        """Take what an xdist worker shipped. Notes said by several workers are said once."""
        from .merge import union_by_nodeid

        self.records = {r["nodeid"]: r for r in union_by_nodeid(self.records.values(), payload.get("records", []))}
        if self.model_info is None and payload.get("model"):
            self.model_info = payload["model"]
        self.notes.extend(n for n in payload.get("notes", []) if n not in self.notes)
