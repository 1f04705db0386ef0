"""Plugin settings: declared once, resolved once (CLI > env > ini > default).

Every option exists three ways: ``--mmlu-NAME`` on the command line,
``PYTEST_MMLU_NAME`` in the environment and ``mmlu_NAME`` in the ini file.
A bad value raises ``pytest.UsageError`` naming the value and where it came
from, before any test runs; so do options that contradict each other
(``contradictions.py``).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from .contradictions import CONTRADICTIONS
from .mmlu.shards import parse_shard
from .models.variants import parse_adapter, parse_quantization
from .reports.baseline import check_baseline
from .reports.report import ReportError
from .sources import looks_like_path

TRUE_WORDS = {"1", "true", "yes", "on"}


FALSE_WORDS = {"0", "false", "no", "off"}


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
    Option("model", "Hugging Face model id or local model folder to evaluate. MMLU tests are "
           "skipped without it.", _model, metavar="ID_OR_DIR"),
    Option("revision", "Hub revision (branch, tag or commit) of --mmlu-model.", str, metavar="REV"),
    Option("data", "MMLU source: the hub dataset id (default cais/mmlu), a local copy of it "
           "(parquet), or a folder/.zip/.tar of the original Hendrycks CSVs.", _data,
           default="cais/mmlu", metavar="SOURCE"),
    Option("dtype", "Weights dtype: auto (the checkpoint's half dtype on a GPU that runs it "
           "natively, else float32), float32, bfloat16, float16.", _choice("auto", "float32", "bfloat16", "float16"),
           default="auto", metavar="DTYPE"),
    Option("device", "auto, cpu, cuda or cuda:N.", _device, default="auto", metavar="DEVICE"),
    Option("batch_size", "auto (sized to the memory budget, the default) or a fixed number of "
           "rows per forward pass.", _batch_size, default="auto", metavar="N"),
    Option("report", "Write a JSON report of every evaluation to PATH.", _path, metavar="PATH"),
    Option("trust_remote_code", "Allow the model's own Python code from the hub (off by default).",
           _flag, default=False, is_flag=True),
    Option("baseline", "JSON report of an earlier run (the last release) for "
           "@pytest.mark.mmlu_no_regression.", _path, metavar="PATH"),
    Option("update_baseline", "Write the --mmlu-baseline file from this run (only if the run "
           "passes; entries of tests not run are kept).", _flag, default=False, is_flag=True),
    Option("cache_dir", "Result cache folder (default: pytest-mmlu/ in pytest's cache).", _path,
           metavar="DIR"),
    Option("no_cache", "Neither read nor write the result cache.", _flag, default=False,
           is_flag=True),
    Option("chart", "Write a PNG of per-subject accuracy to PATH (needs matplotlib: "
           "pip install 'pytest-mmlu[chart]').", _path, metavar="PATH"),
    Option("allow_pickle", "Allow loading weights from pickle (.bin/.pt) files; by default only "
           "safetensors are loaded.", _flag, default=False, is_flag=True),
    Option("require_model", "Without --mmlu-model, stop with a usage error when MMLU tests were "
           "collected instead of skipping them (on by default when the environment variable CI "
           "is true).", _flag, default=False, is_flag=True),
    Option("allow_skip", "Let MMLU tests skip without a model even in CI (turns "
           "--mmlu-require-model off).", _flag, default=False, is_flag=True),
    # Variants and placement (issues 10 and 12).
    Option("quantization", "Quantize the weights at load: none, int8, int4, fp8 (torchao, weight-only; "
           "CPU and CUDA), nf4 or bnb-int8 (bitsandbytes; CUDA only). Needs "
           "pip install 'pytest-mmlu[quant]'. A pre-quantized checkpoint loads as it is.",
           parse_quantization, default="none", metavar="METHOD"),
    Option("adapter", "PEFT adapter folder (LoRA, IA3...) applied on the model.",
           parse_adapter, metavar="DIR"),
    Option("merge_adapter", "Merge the adapter into the weights after loading (faster; same "
           "model up to rounding).", _flag, default=False, is_flag=True),
    Option("device_map", "fit (one GPU when the weights fit it, else spread over every visible "
           "GPU), auto (always spread with accelerate's device map) or single (one device).",
           _choice("fit", "auto", "single"), default="fit", metavar="MAP"),
    # CI shards and lm-eval files (issue 11).
    Option("shard", "Evaluate only shard I of N of every evaluation's questions (e.g. 2/3); "
           "budgets are judged here, floors and no-regression by 'pytest-mmlu merge' on the "
           "shards' reports.", _shard, metavar="I/N"),
    Option("report_lm_eval", "Also write the results as lm-eval output (results_*.json and "
           "samples_*.jsonl) under DIR.", _path, metavar="DIR"),
    # Chat templates, as lm-eval's --apply_chat_template, --fewshot_as_multiturn and
    # --system_instruction (issue 11).
    Option("chat_template", "Render prompts with the tokenizer's chat template, as lm-eval's "
           "--apply_chat_template: true (the tokenizer's default template) or a template name.",
           _chat_template, metavar="NAME_OR_TRUE", const="true"),
    Option("fewshot_as_multiturn", "Few-shot examples as separate user/assistant turns (lm-eval's "
           "default with a chat template; false: one user turn). Needs --mmlu-chat-template.",
           _flag, metavar="BOOL", const="true"),
    Option("system_instruction", "A system instruction before the subject's description, as "
           "lm-eval's --system_instruction (verbatim: whitespace around it is kept).", str,
           metavar="TEXT", verbatim=True),
)


@dataclass(frozen=True)
class Settings:
    model: str | None = None
    revision: str | None = None
    data: str = "cais/mmlu"
    dtype: str = "auto"
    device: str = "auto"
    batch_size: str | int = "auto"
    report: str | None = None
    trust_remote_code: bool = False
    allow_pickle: bool = False
    baseline: str | None = None
    update_baseline: bool = False
    cache_dir: str | None = None
    no_cache: bool = False
    chart: str | None = None
    require_model: bool = False  # effective: --mmlu-allow-skip already applied
    allow_skip: bool = False
    shard: Any = None  # shards.Shard
    report_lm_eval: str | None = None
    quantization: str = "none"
    adapter: str | None = None
    merge_adapter: bool = False
    device_map: str = "fit"
    chat_template: bool | str | None = None  # None: plain prompts
    fewshot_as_multiturn: bool | None = None  # None: on with a chat template (lm-eval's default)
    system_instruction: str | None = None
    # Where each non-default value came from, for messages ("--mmlu-dtype", "PYTEST_MMLU_DTYPE"...).
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)

    def source_of(self, name: str) -> str:
        return self.sources.get(name, "default")


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("mmlu", "MMLU release gates (pytest-mmlu)")
    for opt in OPTIONS:
        helptext = f"{opt.help} [env {opt.env}, ini {opt.ini}]"
        if opt.is_flag:
            group.addoption(opt.cli, action="store_true", default=None, dest=f"mmlu_{opt.name}",
                            help=helptext)
        elif opt.const is not None:
            group.addoption(opt.cli, action="store", nargs="?", const=opt.const, default=None,
                            dest=f"mmlu_{opt.name}", metavar=opt.metavar, help=helptext)
        else:
            group.addoption(opt.cli, action="store", default=None, dest=f"mmlu_{opt.name}",
                            metavar=opt.metavar, help=helptext)
        parser.addini(opt.ini, opt.help, default="")


def resolve(config: pytest.Config, environ: Mapping[str, str] | None = None) -> Settings:
    """Resolve every option once; raise pytest.UsageError naming a bad value's source."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for opt in OPTIONS:
        cli_value = config.getoption(f"mmlu_{opt.name}")
        ini_value = config.getini(opt.ini)
        if cli_value is not None:
            raw, where = cli_value, f"command line {opt.cli}"
        elif environ.get(opt.env, "") != "":
            raw, where = environ[opt.env], f"environment variable {opt.env}"
        elif ini_value not in ("", None, []):
            raw, where = ini_value, f"ini key {opt.ini} in {config.inipath}"
        else:
            values[opt.name] = opt.default
            continue
        try:
            text = str(raw) if opt.verbatim else str(raw).strip()  # lm-eval keeps its text as given
            values[opt.name] = raw if isinstance(raw, bool) else opt.parse(text)
        except ValueError as exc:
            raise pytest.UsageError(f"pytest-mmlu: bad value {raw!r} from {where}: {exc}") from None
        sources[opt.name] = where
    if "require_model" not in sources and environ.get("CI", "").strip().lower() in TRUE_WORDS:
        # A CI job whose model variable is unset must not pass by skipping every gate.
        values["require_model"], sources["require_model"] = True, "environment variable CI"
    settings = Settings(**values, sources=sources)
    contradictions = [line for check in CONTRADICTIONS if (line := check(settings))]
    if contradictions:
        raise pytest.UsageError("\n".join(f"pytest-mmlu: {line}" for line in contradictions))
    if settings.allow_skip:  # the escape hatch wins over CI and a source of lower precedence
        settings = replace(settings, require_model=False)
    if settings.baseline and Path(settings.baseline).exists():
        # A missing file fails the tests that need it (saying how to create it); an
        # unreadable or foreign one is a configuration error for the whole run, and
        # --mmlu-update-baseline must not overwrite what it cannot read (and merge).

        try:
            kind = check_baseline(settings.baseline)
        except ReportError as exc:
            refuse = ("; --mmlu-update-baseline does not overwrite a file it cannot read: fix it "
                      "or move it away" if settings.update_baseline else "")
            raise pytest.UsageError(f"pytest-mmlu: baseline from {settings.source_of('baseline')}: "
                                    f"{exc}{refuse}") from None
        if kind == "lm-eval" and settings.update_baseline:
            raise pytest.UsageError(f"pytest-mmlu: baseline {settings.baseline} is lm-eval output; "
                                    "--mmlu-update-baseline writes pytest-mmlu reports: give another path")
    # Outputs are checked now, not at the end: a run must not evaluate for an hour and
    # then fail to write its verdict.
    for name, wanted in (("report", True), ("baseline", settings.update_baseline)):
        path = getattr(settings, name)
        problem = unwritable(path) if path and wanted else None
        if problem:
            raise pytest.UsageError(f"pytest-mmlu: {name} path {path} from "
                                    f"{settings.source_of(name)} cannot be written: {problem}")
    return settings


def unwritable(path: str) -> str | None:
    """Why a file cannot be created or replaced at ``path`` (None if it can), touching nothing."""
    target = Path(path)
    if target.is_dir():
        return "it is a directory"
    folder = target.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent  # missing folders are created at the end: check the first existing one
    if not folder.is_dir():
        return f"{folder} is not a directory"
    try:
        # A real probe (an unnamed temporary file, gone on close): access() is wrong for root
        # and for some network file systems.
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        return f"cannot create files in {folder} ({exc.strerror or exc})"
    return None
