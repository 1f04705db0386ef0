"""Every option of the plugin, declared once: its name, help, parser and default. Each exists three
ways: ``--mmlu-NAME`` on the command line, ``PYTEST_MMLU_NAME`` in the environment and
``mmlu_NAME`` in the ini file (``settings.py`` resolves them).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .mmlu.shards import parse_shard
from .models.variants import parse_adapter, parse_quantization
from .sources import looks_like_path

TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off"}


def says_true(value: Any) -> bool:
    """A flag given as text (an option, an lm-eval model argument) that says yes."""
    return str(value).strip().lower() in TRUE_WORDS


def _flag(raw: str) -> bool:
    word = raw.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError("expected one of 1/true/yes/on or 0/false/no/off")


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return raw

    return parse


def _device(raw: str) -> str:
    if not re.fullmatch(r"auto|cpu|cuda|cuda:\d+", raw):
        raise ValueError("expected auto, cpu, cuda or cuda:N")
    return raw


def _batch_size(raw: str) -> str | int:
    if raw == "auto":
        return raw
    if raw.isdigit() and int(raw) > 0:
        return int(raw)
    raise ValueError("expected 'auto' or a positive integer")


def _model(raw: str) -> str:
    if looks_like_path(raw):
        path = Path(raw).expanduser()
        if not path.is_dir():
            raise ValueError(f"model folder {str(path)!r} does not exist")
        if not (path / "config.json").is_file():
            raise ValueError(f"{str(path)!r} has no config.json: not a Hugging Face model folder")
        return str(path.resolve())
    return raw


def _data(raw: str) -> str:
    if looks_like_path(raw):
        path = Path(raw).expanduser()
        if not path.exists():
            raise ValueError(f"MMLU data {str(path)!r} does not exist")
        return str(path.resolve())
    return raw


def _folder(raw: str) -> str:
    path = Path(raw).expanduser()
    if not path.is_dir():
        raise ValueError(f"folder {str(path)!r} does not exist")
    return str(path.resolve())


def _path(raw: str) -> str:
    return str(Path(raw).expanduser())


def _chat_template(raw: str) -> bool | str | None:
    """lm-eval's --apply_chat_template: true for the tokenizer's template, or a template name."""
    word = raw.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return None
    return raw


def _shard(raw: str) -> Any:
    return parse_shard(raw)


@dataclass(frozen=True)
class Option:
    name: str
    help: str
    parse: Callable[[str], Any]
    default: Any = None
    metavar: str | None = None
    is_flag: bool = False
    const: str | None = None  # a value option whose bare form (no value) means this
    verbatim: bool = False  # text taken as given: surrounding whitespace is part of the value

    @property
    def cli(self) -> str:
        return "--mmlu-" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return "PYTEST_MMLU_" + self.name.upper()

    @property
    def ini(self) -> str:
        return "mmlu_" + self.name


OPTIONS: tuple[Option, ...] = (
    Option(
        "model",
        "Hugging Face model id or local model folder to evaluate. MMLU tests are skipped without it.",
        _model,
        metavar="ID_OR_DIR",
    ),
    Option("revision", "Hub revision (branch, tag or commit) of --mmlu-model.", str, metavar="REV"),
    Option(
        "data",
        "MMLU source: the hub dataset id (default cais/mmlu), a local copy of it "
        "(parquet), or a folder/.zip/.tar of the original Hendrycks CSVs.",
        _data,
        default="cais/mmlu",
        metavar="SOURCE",
    ),
    Option(
        "dtype",
        "Weights dtype: auto (the checkpoint's half dtype on a GPU that runs it "
        "natively, else float32), float32, bfloat16, float16.",
        _choice("auto", "float32", "bfloat16", "float16"),
        default="auto",
        metavar="DTYPE",
    ),
    Option("device", "auto, cpu, cuda or cuda:N.", _device, default="auto", metavar="DEVICE"),
    Option(
        "batch_size",
        "auto (sized to the memory budget, the default) or a fixed number of rows per forward pass.",
        _batch_size,
        default="auto",
        metavar="N",
    ),
    Option("report", "Write a JSON report of every evaluation to PATH.", _path, metavar="PATH"),
    Option(
        "trust_remote_code",
        "Allow the model's own Python code from the hub (off by default).",
        _flag,
        default=False,
        is_flag=True,
    ),
    Option(
        "baseline",
        "JSON report of an earlier run (the last release) for @pytest.mark.mmlu_no_regression.",
        _path,
        metavar="PATH",
    ),
    Option(
        "update_baseline",
        "Write the --mmlu-baseline file from this run (only if the run passes; entries of tests not run are kept).",
        _flag,
        default=False,
        is_flag=True,
    ),
    Option("cache_dir", "Result cache folder (default: pytest-mmlu/ in pytest's cache).", _path, metavar="DIR"),
    Option("no_cache", "Neither read nor write the result cache.", _flag, default=False, is_flag=True),
    Option(
        "chart",
        "Write a PNG of per-subject accuracy to PATH (needs matplotlib: pip install 'pytest-mmlu[chart]').",
        _path,
        metavar="PATH",
    ),
    Option(
        "allow_pickle",
        "Allow loading weights from pickle (.bin/.pt) files; by default only safetensors are loaded.",
        _flag,
        default=False,
        is_flag=True,
    ),
    Option(
        "require_model",
        "Without --mmlu-model, stop with a usage error when MMLU tests were "
        "collected instead of skipping them (on by default when the environment variable CI "
        "is true).",
        _flag,
        default=False,
        is_flag=True,
    ),
    Option(
        "allow_skip",
        "Let MMLU tests skip without a model even in CI (turns --mmlu-require-model off).",
        _flag,
        default=False,
        is_flag=True,
    ),
    # Variants and placement (issues 10 and 12).
    Option(
        "quantization",
        "Quantize the weights at load: none, int8, int4, fp8 (torchao, weight-only; "
        "CPU and CUDA), nf4 or bnb-int8 (bitsandbytes; CUDA only). Needs "
        "pip install 'pytest-mmlu[quant]'. A pre-quantized checkpoint loads as it is.",
        parse_quantization,
        default="none",
        metavar="METHOD",
    ),
    Option("adapter", "PEFT adapter folder (LoRA, IA3...) applied on the model.", parse_adapter, metavar="DIR"),
    Option(
        "merge_adapter",
        "Merge the adapter into the weights after loading (faster; same model up to rounding).",
        _flag,
        default=False,
        is_flag=True,
    ),
    Option(
        "device_map",
        "fit (one GPU when the weights fit it, else spread over every visible "
        "GPU), auto (always spread with accelerate's device map) or single (one device).",
        _choice("fit", "auto", "single"),
        default="fit",
        metavar="MAP",
    ),
    # CI shards and lm-eval files (issue 11).
    Option(
        "shard",
        "Evaluate only shard I of N of every evaluation's questions (e.g. 2/3); "
        "budgets are judged here, floors and no-regression by 'pytest-mmlu merge' on the "
        "shards' reports.",
        _shard,
        metavar="I/N",
    ),
    Option(
        "report_lm_eval",
        "Also write the results as lm-eval output (results_*.json and samples_*.jsonl) under DIR.",
        _path,
        metavar="DIR",
    ),
    # Chat templates, as lm-eval's --apply_chat_template, --fewshot_as_multiturn and
    # --system_instruction (issue 11).
    Option(
        "include_path",
        "A folder of lm-eval task YAMLs for @pytest.mark.lm_eval_task, as lm-eval's --include_path "
        "(its tasks win over the registry's of the same name).",
        _folder,
        metavar="DIR",
    ),
    Option(
        "chat_template",
        "Render prompts with the tokenizer's chat template, as lm-eval's "
        "--apply_chat_template: true (the tokenizer's default template) or a template name.",
        _chat_template,
        metavar="NAME_OR_TRUE",
        const="true",
    ),
    Option(
        "fewshot_as_multiturn",
        "Few-shot examples as separate user/assistant turns (lm-eval's "
        "default with a chat template; false: one user turn). Needs --mmlu-chat-template.",
        _flag,
        metavar="BOOL",
        const="true",
    ),
    Option(
        "system_instruction",
        "A system instruction before the subject's description, as "
        "lm-eval's --system_instruction (verbatim: whitespace around it is kept).",
        str,
        metavar="TEXT",
        verbatim=True,
    ),
)
DEFAULTS: dict[str, Any] = {opt.name: opt.default for opt in OPTIONS}  # Settings' field defaults
