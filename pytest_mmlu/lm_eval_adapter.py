"""pytest-mmlu's engine as an lm-eval model: ``--model pytest-mmlu``.

Any lm-eval log-likelihood task (multiple choice included) runs through our
engine: lm-eval builds the requests, tokenization is lm-eval's own
(``TemplateLM._encode_pair`` over :meth:`PytestMmluLM.tok_encode`, which
mirrors the HF backend), and the engine scores them.

Importing this module registers the model; ``pytest-mmlu lm-eval ...`` runs
lm-eval's command line with it registered.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model

from .engine import EngineStats, resolve_max_length
from .engine.planner import RowCost
from .memory.meters import make_meter
from .mmlu.evaluation import build_engine
from .mmlu.prompts import LmEvalTokenizer, TokenRequest
from .models.load import load_model
from .models.variants import FULL, make_variant
from .options import DEFAULTS, says_true
from .settings import Settings
from .sizes import parse_size


@register_model("pytest-mmlu", "pytest_mmlu")
class PytestMmluLM(TemplateLM):
    def __init__(
        self,
        pretrained: str,
        revision: str | None = DEFAULTS["revision"],
        dtype: str = DEFAULTS["dtype"],
        device: str = DEFAULTS["device"],
        batch_size: str | int = DEFAULTS["batch_size"],
        memory_budget: str | int | None = None,
        trust_remote_code: bool = DEFAULTS["trust_remote_code"],
        quantization: str = DEFAULTS["quantization"],
        adapter: str | None = DEFAULTS["adapter"],
        merge_adapter: bool = DEFAULTS["merge_adapter"],
        device_map: str = DEFAULTS["device_map"],
        **_ignored: Any,
    ) -> None:
        super().__init__()
        batch = batch_size if batch_size == "auto" else int(batch_size)
        # model_args arrive as strings ("merge_adapter=True"): the variant parses them as the options do
        variant = make_variant(FULL, quantization, adapter, says_true(merge_adapter))
        settings = Settings(
            model=pretrained,
            revision=revision,
            dtype=dtype,
            device=device,
            trust_remote_code=bool(trust_remote_code),
            batch_size=batch,
            quantization=variant.quantization,
            adapter=variant.adapter,
            merge_adapter=variant.merge_adapter,
            device_map=device_map,
        )
        self.loaded = load_model(settings)
        self.tokenizer = self.loaded.tokenizer
        self._tok = LmEvalTokenizer(self.tokenizer)
        self._meter = make_meter(self.loaded.device, self.loaded.shared)
        self._budget = None if memory_budget is None else parse_size(memory_budget)
        self._batch = batch
        config = self.loaded.model.config
        self._max_length = resolve_max_length(config, self.tokenizer)
        self._row_cost = RowCost.from_config(config, self.loaded.model.dtype.itemsize)
        self.last_stats: EngineStats | None = None  # the last call's, for benchmarks and tests

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        return self._tok.prefix_token_id

    @property
    def max_length(self) -> int:
        return self._max_length

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        if add_special_tokens is not None:
            return self.tokenizer.encode(string, add_special_tokens=add_special_tokens)
        return self._tok.encode(string)

    def _loglikelihood_tokens(
        self, requests: list, disable_tqdm: bool = False, **kwargs: Any
    ) -> list[tuple[float, bool]]:
        engine = build_engine(self.loaded, self._meter, self._batch, self._budget, self._row_cost, self._max_length)
        scores = engine.score([TokenRequest(tuple(ctx), tuple(cont)) for _, ctx, cont in requests])
        self.last_stats = engine.stats
        return [(s.loglikelihood, s.is_greedy) for s in scores]

    def loglikelihood_rolling(self, requests: list, disable_tqdm: bool = False) -> list[float]:
        raise NotImplementedError("pytest-mmlu scores log-likelihood requests only (no rolling perplexity)")

    def generate_until(self, requests: list, disable_tqdm: bool = False) -> list[str]:
        raise NotImplementedError("pytest-mmlu scores log-likelihood requests only (no generation)")


def mmlu_tasks(data: Any, subjects: list[str]) -> dict[str, Any]:
    """lm-eval's own ``mmlu_<subject>`` tasks (its YAML), fed from local data instead of the hub.

    ``data`` is a :class:`pytest_mmlu.mmlu.data.MmluData`; handy for running lm-eval's MMLU offline
    and for comparing its numbers with ours on the same questions.
    """

    import datasets
    import lm_eval
    from lm_eval.tasks._yaml_loader import load_yaml

    def dataset_of(subject: str):
        def make(**_: Any) -> datasets.DatasetDict:
            splits = {}
            for split in ("dev", "test"):
                rows = data.split(subject, split)
                splits[split] = datasets.Dataset.from_dict(
                    {
                        "question": [q.question for q in rows],
                        "subject": [subject] * len(rows),
                        "choices": [list(q.choices) for q in rows],
                        "answer": [q.answer for q in rows],
                    }
                )
            return datasets.DatasetDict(splits)

        return make

    folder = Path(lm_eval.__file__).parent / "tasks" / "mmlu" / "default"
    configs = []
    for subject in subjects:
        cfg = load_yaml(folder / f"mmlu_{subject}.yaml")
        cfg["custom_dataset"] = dataset_of(subject)
        configs.append(cfg)
    return bare_task_manager().load(configs)["tasks"]


def bare_task_manager() -> Any:
    """An lm-eval TaskManager that indexes none of lm-eval's 14,000 task files (10 s each time):
    for configs given whole, and for ``simple_evaluate(task_manager=...)`` given task objects."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_defaults=False)
