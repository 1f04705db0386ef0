"""Per-run state: the model (loaded once per variant, lazily), the data, the result cache, the
baseline, every evaluation's identity, and the record of every MMLU test. Verdicts are
judged by ``judge.py``; what the run emits is written by ``outputs/``.

Records (``records.py``) are plain dicts: a test's record travels with its pytest report (an
xdist worker's reports reach the controller as they are made, so a worker that crashes loses
nothing it had reported), and ``manifest`` holds the declared gates of every MMLU test
collected, so that a test that never reported still has a record.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from . import SCORING_VERSION
from .identity import CACHE, Identity, difference, evaluation_identity, with_questions
from .markers import EvalSpec, TaskSpec
from .memory.allocator import release_memory
from .mmlu.chat import ChatTemplateError, prompt_format_of
from .mmlu.data import MmluData
from .mmlu.results import EvaluationResult
from .mmlu.shards import ShardedData, empty_result
from .models.content import MEMO_NAME, ContentHashes, model_content
from .models.errors import ModelLoadError, where_model
from .models.load import load_model
from .models.plan import LoadPlan, plan_load
from .models.variants import FULL, Variant, make_variant, session_variant
from .reports.baseline import Baseline, load_baseline
from .reports.cache import ResultCache, as_asked, measured_under
from .reports.report import joined_model_info
from .request import EvalRequest
from .settings import Settings
from .software import device_kind, software_versions
from .tasks.runs import TaskRuns
from .text import first_line

Spec = EvalSpec | TaskSpec
PAYLOAD_VERSION = 2  # what an xdist worker ships at its end; bump on a change of shape


class MmluSession:
    def __init__(self, config: pytest.Config, settings: Settings) -> None:
        self.config = config
        self.settings = settings
        self._loaded: Any = None
        self._load_errors: dict[Variant, str] = {}  # per variant: a failed load is not retried
        self._plans: dict[Variant, LoadPlan] = {}  # per variant: device and dtype, decided once
        self.full_results: dict[tuple, EvaluationResult] = {}  # for no-regression against="full"
        self._data: Any = None
        self._evaluators: dict[str, Any] = {}  # of the loaded model: "mmlu", "tasks"
        self._tokenizer: Any = None
        self._prompt: Any = False  # the recorded prompt format; False: not known yet
        self._software: dict[str, Any] | None = None
        self._model_content: Any = None
        self.model_info: dict[str, Any] | None = None
        self.records: dict[str, dict[str, Any]] = {}  # every MMLU test's final record
        self.manifest: dict[str, dict[str, Any]] = {}  # nodeid -> declared gates, every MMLU test
        self.notes: list[str] = []  # printed at the end of the terminal summary
        self._baseline: Baseline | None = None
        self.cache: Any = None
        cache_root = settings.cache_dir or (
            str(config.cache.mkdir("pytest-mmlu")) if getattr(config, "cache", None) else None
        )
        memo = None
        if cache_root and not settings.no_cache:
            self.cache = ResultCache(Path(cache_root))
            memo = Path(cache_root) / MEMO_NAME
            if settings.cache_dir and config.getoption("cacheclear", False):
                self.cache.clear()  # --cache-clear clears our folder too when it lives elsewhere
        self._memo_path = memo
        self._hashes: ContentHashes | None = None
        fmt = prompt_format_of(settings)
        self.tasks = TaskRuns(
            settings.include_path,
            lambda: self.hashes.folder(Path(str(settings.include_path))),
            settings.shard,
            bool(fmt.is_chat or fmt.system_instruction),
        )

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

    def load_plan(self, variant: Variant | None = None) -> LoadPlan:
        """Where and in what dtype ``variant`` loads, decided once (``models.plan.plan_load``)."""
        variant = self.variant if variant is None else variant
        if variant in self._load_errors:
            raise ModelLoadError(self._load_errors[variant])
        if variant not in self._plans:
            try:
                self._plans[variant] = plan_load(self.settings, variant)
            except ModelLoadError as exc:
                self._load_errors[variant] = str(exc)
                raise
        return self._plans[variant]

    def loaded_model(self, variant: Variant | None = None) -> Any:
        """The model as ``variant`` (default: the session's). One model is in memory at a time:
        another variant's is released first, so that each evaluation's budget sees one model."""

        variant = self.variant if variant is None else variant
        plan = self.load_plan(variant)
        if self._loaded is not None and self._loaded.variant != variant:
            self.release_model()
        if self._loaded is None:
            try:
                self._loaded = load_model(self.settings, variant, plan)
            except ModelLoadError as exc:
                self._load_errors[variant] = str(exc)
                raise
            info = {"model": self.settings.model, **self._loaded.describe()}
            others = (self.model_info or {}).get("variants", {})
            if variant == self.variant:
                self.model_info = {**info, **({"variants": others} if others else {})}
            else:  # the report's model entry lists every variant loaded
                self.model_info = {
                    **(self.model_info or {"model": self.settings.model}),
                    "variants": {**others, variant.label: info},
                }
        return self._loaded

    def release_model(self) -> None:
        """Drop the loaded model (and its evaluator) and give its memory back."""
        if self._loaded is not None:
            device = self._loaded.device
            self._loaded = None
            self._evaluators.clear()
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
        if self._data is None:
            self._data = MmluData(self.settings.data)
        return self._data

    def evaluator(self, variant: Variant | None = None, tasks: bool = False) -> Any:
        """The loaded model's evaluator of MMLU (``mmlu.evaluation``) or of lm-eval tasks."""
        from .mmlu.evaluation import Evaluator
        from .tasks.evaluation import TaskEvaluator

        loaded, kind = self.loaded_model(variant), "tasks" if tasks else "mmlu"
        found = self._evaluators.get(kind)
        if found is None or found.loaded is not loaded:
            batch = self.settings.batch_size
            fmt = prompt_format_of(self.settings)
            found = TaskEvaluator(loaded, batch) if tasks else Evaluator(loaded, self.evaluated_data(), batch, fmt)
            self._evaluators[kind] = found
        return found

    def evaluated_data(self) -> Any:
        """The questions this job evaluates: all of them, or its shard's (``--mmlu-shard``)."""
        shard = self.settings.shard
        return self.data() if shard is None else ShardedData(self.data(), shard)

    # -- identity: what an evaluation is --------------------------------------------------------
    @property
    def hashes(self) -> ContentHashes:
        if self._hashes is None:
            self._hashes = ContentHashes(self._memo_path)
        return self._hashes

    def model_content(self) -> str | None:
        """The model's content (``content.py``), found once; None where it cannot be known."""
        if self._model_content is None:
            self._model_content = model_content(str(self.settings.model), self.settings.revision, self.hashes)
            if self._model_content.note:  # e.g. the hub was unreachable: the local snapshot
                self.notes.append(self._model_content.note)
        return self._model_content.key

    def prompt_format(self) -> dict[str, Any] | None:
        """The prompt format as recorded (``PromptFormat.describe``): a chat template by its
        text's sha256, read from the tokenizer without loading the model."""

        if self._prompt is False:
            fmt = prompt_format_of(self.settings)
            try:
                template = fmt.template_of(self.tokenizer()) if fmt.is_chat else None
            except ChatTemplateError as exc:
                raise ModelLoadError(f"--mmlu-chat-template: {exc}") from None
            self._prompt = fmt.describe(template)
        return self._prompt

    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            try:
                self._tokenizer = AutoTokenizer.from_pretrained(
                    self.settings.model,
                    revision=self.settings.revision,
                    trust_remote_code=self.settings.trust_remote_code,
                )
            except Exception as exc:  # noqa: BLE001 - transformers raises OSError/ValueError...
                raise ModelLoadError(
                    f"cannot load {where_model(str(self.settings.model))}: {first_line(exc)}"
                ) from None
        return self._tokenizer

    def software(self) -> dict[str, Any]:
        if self._software is None:
            self._software = software_versions()
        return self._software

    def identity(self, spec: Spec, variant: Variant | None = None) -> Identity:
        """The identity of evaluating ``spec`` on ``variant`` in this job, known before anything
        is loaded (device and dtype from the load plan the loader follows)."""
        variant = self.variant if variant is None else variant
        plan = self.load_plan(variant)
        common: dict[str, Any] = {
            "model": self.model_content(),
            "quantization": variant.quantization,
            "adapter": None if variant.adapter is None else self.hashes.folder(Path(variant.adapter)),
            "adapter_name": None if variant.adapter is None else Path(variant.adapter).name,
            "merge_adapter": variant.merge_adapter,
            "dtype": plan.dtype,
            "device": device_kind(plan.device),
            "scoring": SCORING_VERSION,
            "software": self.software(),
        }
        if isinstance(spec, TaskSpec):
            return self.tasks.identity(spec, common)
        data = self.evaluated_data()
        ids = [(q.subject, q.index) for s in spec.subjects for q in data.test_questions(s, spec.limit)]
        return evaluation_identity(
            **common,
            prompt_format=self.prompt_format(),
            data=self.data().fingerprint(spec.subjects),
            questions=ids,
            shots=spec.shots,
        )

    # -- evaluations ----------------------------------------------------------------------------
    def request(self, spec: Spec, budget: int | None, variant: Variant | None = None) -> EvalRequest:
        """``spec`` under ``budget`` on ``variant`` (default: the session's), with its identity."""
        variant = self.variant if variant is None else variant
        return EvalRequest(spec, budget, variant, self.identity(spec, variant))

    def evaluate(self, request: EvalRequest, progress: Callable[[int, int], None] | None = None) -> EvaluationResult:
        """The result of ``request``: from the result cache, else evaluated. Its ``identity``
        says what it is."""
        spec, budget, variant, identity = request.spec, request.budget, request.variant, request.identity
        conditions = measured_under(self.settings, budget)
        result = self.cache.get(identity, conditions) if self.cache is not None else None
        if result is not None:  # the same questions, asked by this spec (another limit, order, label)
            result = as_asked(result, spec)
        if result is None and self.settings.shard is not None and not identity["n"]:
            if isinstance(spec, TaskSpec):  # nothing of this evaluation is ours
                return self.tasks.prepared(spec).empty_result(budget, identity, variant.label)
            fingerprint = self.data().fingerprint(spec.subjects)
            return empty_result(spec, budget, fingerprint, identity, variant=variant.label)
        if result is None:
            if isinstance(spec, TaskSpec):
                result = self.tasks.evaluate(self.evaluator(variant, tasks=True), spec, budget, progress)
            else:
                result = self.evaluator(variant).evaluate(spec, budget, progress=progress)
            # What was loaded and asked, as the result says it: the same by construction; were it
            # not, the result is recorded as what it is and never cached under the other.
            as_loaded = with_questions(
                {**identity, "dtype": result.dtype, "device": device_kind(result.device)},
                ((q.subject, q.index) for q in result.questions),
            )
            result.identity = as_loaded
            if self.cache is not None and difference(identity, as_loaded, CACHE) is None:
                self.cache.put(identity, conditions, result)
        if variant.is_full:
            self.full_results.setdefault(spec.key(), result)
        return result

    def full_result(self, spec: Spec) -> EvaluationResult:
        """The full-precision model's result on ``spec``: this session's, else evaluated now."""
        found = self.full_results.get(spec.key())
        return found if found is not None else self.evaluate(self.request(spec, None, FULL))

    def unsharded_count(self, spec: Spec) -> int | None:
        """In a CI shard, how many questions the whole evaluation has (merge checks them all)."""
        if self.settings.shard is None:
            return None
        if isinstance(spec, TaskSpec):
            return self.tasks.unsharded_count(spec)
        return self.evaluated_data().unsharded_count(spec.subjects, spec.limit)

    def baseline(self) -> Baseline:
        """The baseline this run compares with (read once), or why there is none."""
        if self._baseline is None:
            path = self.settings.baseline
            if path and Path(path).exists():
                self._baseline = load_baseline(path, self.data(), self.tokenizer, self.tasks.for_entry)
            else:
                self._baseline = Baseline(None, path or None)
            # This run writes it: what it would replace still judges (a regression is not recorded).
            self._baseline.recording = self.settings.update_baseline
        return self._baseline

    # -- xdist: a worker ships its model entry and notes at its end -----------------------------
    def payload(self) -> dict[str, Any]:
        return {"version": PAYLOAD_VERSION, "model": self.model_info, "notes": list(self.notes)}

    def merge(self, payload: dict[str, Any]) -> None:
        """Take what an xdist worker shipped. Notes said by several workers are said once."""
        self.model_info = joined_model_info(self.model_info, payload.get("model"))
        self.notes.extend(n for n in payload.get("notes", []) if n not in self.notes)
