"""Plugin settings: resolved once (CLI > env > ini > default) into a frozen ``Settings``.

The options are declared in ``options.py``. A bad value raises ``pytest.UsageError`` naming the
value and where it came from, before any test runs; so do options that contradict each other
(``contradictions.py``), and outputs that cannot be written.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from .contradictions import CONTRADICTIONS
from .options import DEFAULTS, OPTIONS, says_true
from .reports.baseline import check_baseline
from .reports.report import ReportError


@dataclass(frozen=True)
class Settings:
    """Every setting, resolved once (CLI > env > ini > default); the defaults are the option
    table's (``options.OPTIONS``)."""

    model: str | None = DEFAULTS["model"]
    revision: str | None = DEFAULTS["revision"]
    data: str = DEFAULTS["data"]
    dtype: str = DEFAULTS["dtype"]
    device: str = DEFAULTS["device"]
    batch_size: str | int = DEFAULTS["batch_size"]
    report: str | None = DEFAULTS["report"]
    trust_remote_code: bool = DEFAULTS["trust_remote_code"]
    allow_pickle: bool = DEFAULTS["allow_pickle"]
    baseline: str | None = DEFAULTS["baseline"]
    update_baseline: bool = DEFAULTS["update_baseline"]
    cache_dir: str | None = DEFAULTS["cache_dir"]
    no_cache: bool = DEFAULTS["no_cache"]
    chart: str | None = DEFAULTS["chart"]
    require_model: bool = DEFAULTS["require_model"]  # effective: --mmlu-allow-skip already applied
    allow_skip: bool = DEFAULTS["allow_skip"]
    shard: Any = DEFAULTS["shard"]  # shards.Shard
    report_lm_eval: str | None = DEFAULTS["report_lm_eval"]
    quantization: str = DEFAULTS["quantization"]
    adapter: str | None = DEFAULTS["adapter"]
    merge_adapter: bool = DEFAULTS["merge_adapter"]
    device_map: str = DEFAULTS["device_map"]
    chat_template: bool | str | None = DEFAULTS["chat_template"]  # None: plain prompts
    # None: few-shot examples as turns with a chat template (lm-eval's default)
    fewshot_as_multiturn: bool | None = DEFAULTS["fewshot_as_multiturn"]
    system_instruction: str | None = DEFAULTS["system_instruction"]
    include_path: str | None = DEFAULTS["include_path"]  # lm-eval task folder
    # Where each non-default value came from, for messages ("--mmlu-dtype", "PYTEST_MMLU_DTYPE"...).
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)

    def source_of(self, name: str) -> str:
        return self.sources.get(name, "default")


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("mmlu", "MMLU release gates (pytest-mmlu)")
    for opt in OPTIONS:
        helptext = f"{opt.help} [env {opt.env}, ini {opt.ini}]"
        if opt.is_flag:
            group.addoption(opt.cli, action="store_true", default=None, dest=f"mmlu_{opt.name}", help=helptext)
        elif opt.const is not None:
            group.addoption(
                opt.cli,
                action="store",
                nargs="?",
                const=opt.const,
                default=None,
                dest=f"mmlu_{opt.name}",
                metavar=opt.metavar,
                help=helptext,
            )
        else:
            group.addoption(
                opt.cli, action="store", default=None, dest=f"mmlu_{opt.name}", metavar=opt.metavar, help=helptext
            )
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
    if "require_model" not in sources and says_true(environ.get("CI", "")):
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
            refuse = (
                "; --mmlu-update-baseline does not overwrite a file it cannot read: fix it or move it away"
                if settings.update_baseline
                else ""
            )
            raise pytest.UsageError(
                f"pytest-mmlu: baseline from {settings.source_of('baseline')}: {exc}{refuse}"
            ) from None
        if kind == "lm-eval" and settings.update_baseline:
            raise pytest.UsageError(
                f"pytest-mmlu: baseline {settings.baseline} is lm-eval output; "
                "--mmlu-update-baseline writes pytest-mmlu reports: give another path"
            )
    # Outputs are checked now, not at the end: a run must not evaluate for an hour and
    # then fail to write its verdict.
    for name, wanted in (("report", True), ("baseline", settings.update_baseline)):
        path = getattr(settings, name)
        problem = unwritable(path) if path and wanted else None
        if problem:
            raise pytest.UsageError(
                f"pytest-mmlu: {name} path {path} from {settings.source_of(name)} cannot be written: {problem}"
            )
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
