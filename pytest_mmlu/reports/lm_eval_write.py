"""Our results written as lm-eval output (``write_lm_eval``): one lm-eval run per evaluated model as
loaded (``identity.LM_EVAL_RUN``), with lm-eval's hashes, so that tools reading lm-eval results
read ours; a chat-template evaluation as lm-eval's ``--apply_chat_template`` run (rendered
prompts, the template and its sha, few-shot turns, system instruction).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from .. import __version__
from ..identity import LM_EVAL_RUN, of_entry, run_key
from ..mmlu.chat import ChatTemplateError, PromptFormat, PromptRenderer
from ..mmlu.chat import sha256 as hash_string  # lm-eval's hash_string: the sha256 of a text
from ..mmlu.data import DataError, MmluData
from ..mmlu.prompts import description
from ..records import own_evaluations
from ..text import first_line
from .lm_eval_format import DEFAULT_TEMPLATE, sanitize_model_name
from .lm_eval_tasks import Prepare, TaskRun, is_task_entry, task_hashes, task_runs_of, write_task_run
from .report import ReportError


# -- writing: our results as lm-eval output -----------------------------------------------------
def write_lm_eval(
    folder: str | Path, report: dict[str, Any], data: Any, tokenizer: Any = None, prepare: Prepare | None = None
) -> list[Path]:
    """Write ``report``'s evaluations as lm-eval output under ``folder``: for each number of
    shots one run (``[<k>-shot/]<model>/results_<date>.json`` and one ``samples_mmlu_<subject>_
    <date>.jsonl`` per subject; a question several evaluations share is written once).
    ``data``: the MmluData (or its source) the report was made on, for the docs and prompts.

    Evaluations made with a chat template or a system instruction are written as lm-eval
    writes a run with ``--apply_chat_template`` (``--fewshot_as_multiturn``,
    ``--system_instruction``): the rendered prompts, and the run's template, its sha256 and
    the instruction in the results file. The prompts are rendered again with ``tokenizer``
    (default: the report's model's, loaded now), which must hold the template the
    evaluation recorded (same sha256).

    lm-eval task evaluations (``lm_eval_task``) are written as lm-eval runs of their tasks
    (``lm_eval_tasks.write_task_run``; ``prepare`` gives an entry's prepared tasks), in a folder
    ``tasks[_...]`` beside MMLU's ``mmlu[_...]`` when both are written."""

    runs = _runs_of(report)
    task_runs = task_runs_of(report)
    if task_runs and prepare is None:
        raise ReportError("lm-eval task evaluations need their tasks loaded to write their samples")
    if runs and (isinstance(data, str) or data is None):
        try:
            data = MmluData(str(data))
        except DataError as exc:
            raise ReportError(f"cannot read the MMLU data for the samples: {first_line(exc)}") from None
    for run in runs:  # the docs and prompts written are the data's: it must be the evaluations' data
        for subjects, recorded in run.fingerprints:
            if recorded != data.fingerprint(subjects):
                raise ReportError(
                    f"the report's evaluations of {','.join(subjects)} were not made on the data "
                    f"{data.label} (fingerprint {str(recorded)[:12] or 'not recorded'}, the data's "
                    f"{data.fingerprint(subjects)[:12]}): give the data they were made on"
                )
    model = report.get("model") or {}
    model_name = str(model.get("model") or model.get("name") or "pytest-mmlu")
    try:
        lm_eval_version = version("lm_eval")
    except PackageNotFoundError:
        lm_eval_version = None
    written = []
    date = time.strftime("%Y-%m-%dT%H-%M-%S", time.gmtime()) + f".{int(time.time() * 1e6) % 10**6:06d}"
    _name_folders(runs, task_runs)
    header: dict[str, Any] = {
        "config": {
            "model": "pytest-mmlu",
            "model_args": {"pretrained": model_name},
            "model_dtype": model.get("dtype"),
            "model_revision": model.get("revision"),
            "model_sha": model.get("commit") or "",
            "device": model.get("device"),
            "bootstrap_iters": 0,
        },
        "date": time.time(),
        "lm_eval_version": lm_eval_version,
        "pytest_mmlu_version": __version__,
        "model_source": "pytest-mmlu",
        "model_name": model_name,
        "model_name_sanitized": sanitize_model_name(model_name),
    }
    for task_run in task_runs:
        assert prepare is not None
        out = Path(folder) / task_run.folder / sanitize_model_name(model_name)
        written.extend(write_task_run(out, task_run, prepare, date, header))
    for run in runs:
        shots, tasks, identity = run.shots, run.tasks, run.identity
        renderer = _renderer(run.prompt_format, report, tokenizer)
        fmt = renderer.format
        out = Path(folder) / run.folder / sanitize_model_name(model_name)
        out.mkdir(parents=True, exist_ok=True)
        results, configs, samples_of = {}, {}, {}
        for subject, questions in sorted(tasks.items()):
            task = f"mmlu_{subject}"
            rows = data.split(subject, "test")
            asked = [rows[i] for i in sorted(questions)]
            prompts = renderer.contexts(subject, data.shots(subject, shots), asked)
            samples = [
                _sample(question, prompt, fmt.continuations, questions[question.index])
                for question, prompt in zip(asked, prompts)
            ]
            samples_of[task] = samples
            accs = [s["acc"] for s in samples]
            n = len(accs)
            mean = sum(accs) / n
            stderr = (sum((a - mean) ** 2 for a in accs) / (n - 1) / n) ** 0.5 if n > 1 else float("nan")
            results[task] = {
                "name": task,
                "alias": subject,
                "sample_len": n,
                "acc,none": mean,
                "acc_stderr,none": stderr if n > 1 else "N/A",
            }
            configs[task] = {
                "task": task,
                "task_alias": subject,
                "dataset_path": str(report.get("data")),
                "dataset_name": subject,
                "test_split": "test",
                "fewshot_split": "dev",
                **DEFAULT_TEMPLATE,
                "description": description(subject),
                "fewshot_config": {"sampler": "first_n", "split": "dev"},
                "num_fewshot": shots,
                "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
                "repeats": 1,
                "metadata": {"version": 1.0},
                "n_test_questions": len(rows),
            }
        document = {
            "results": results,
            "group_subtasks": {},
            "configs": configs,
            "versions": {t: 1.0 for t in results},
            "n-shot": {t: shots for t in results},
            "higher_is_better": {t: {"acc": True} for t in results},
            "n-samples": {
                t: {"original": configs[t].pop("n_test_questions"), "effective": results[t]["sample_len"]}
                for t in results
            },
            **header,
            "config": {**header["config"], "limit": _one_limit(run.limits)},
            "task_hashes": task_hashes(samples_of),
            # lm-eval's GeneralConfigTracker.log_experiment_args: the run's prompt format.
            "system_instruction": fmt.system_instruction,
            "system_instruction_sha": hash_string(fmt.system_instruction) if fmt.system_instruction else None,
            "fewshot_as_multiturn": fmt.fewshot_as_multiturn if fmt.is_chat else None,
            "chat_template": renderer.template,
            "chat_template_sha": hash_string(renderer.template) if renderer.template else None,
            # What the run evaluated (identity.py, less the questions): read back when these files
            # are a baseline, so that another variant or dtype is never compared as this one.
            "pytest_mmlu_identity": identity,
        }
        if identity.get("dtype"):
            document["config"]["model_dtype"] = f"torch.{identity['dtype']}"
        path = out / f"results_{date}.json"
        path.write_text(json.dumps(document, indent=2, ensure_ascii=False), encoding="utf-8")
        written.append(path)
        for task, samples in samples_of.items():
            path = out / f"samples_{task}_{date}.jsonl"
            path.write_text("".join(json.dumps(s, ensure_ascii=False) + "\n" for s in samples), encoding="utf-8")
            written.append(path)
    return written


@dataclass
class _Run:
    """The evaluations of a report that make one lm-eval run: one identity but the questions
    (``identity.LM_EVAL_RUN``: the same model, variant, dtype, prompts, shots, software)."""

    identity: dict[str, Any]
    shots: int
    prompt_format: dict[str, Any] | None
    variant: str
    tasks: dict[str, dict[int, dict]] = field(default_factory=dict)
    limits: set = field(default_factory=set)
    fingerprints: list[tuple[list[str], Any]] = field(default_factory=list)  # each evaluation's data
    folder: str = ""


def _runs_of(report: dict[str, Any]) -> list[_Run]:
    """The report's evaluations grouped into lm-eval runs, each with the folder it is written in
    (none for a single run; else named by what tells the runs apart: ``5-shot``, ``int8``...)."""
    runs: dict[str, _Run] = {}
    for test in report["tests"]:
        for ev in own_evaluations(test):
            if ev.get("accuracy") is None or not ev.get("n") or is_task_entry(ev):
                continue
            identity = of_entry(ev)
            key = run_key(identity, LM_EVAL_RUN)
            if key not in runs:
                kept = {k: v for k, v in identity.items() if k not in ("data", "questions", "n")}
                runs[key] = _Run(kept, ev["shots"], ev.get("prompt_format"), ev.get("variant") or "full")
            run = runs[key]
            run.limits.add(ev["limit"])
            run.fingerprints.append((list(ev["subjects"]), identity.get("data")))
            for q in ev["questions"]:
                run.tasks.setdefault(q["subject"], {}).setdefault(q["index"], q)
    found = list(runs.values())
    if len(found) > 1:
        for i, run in enumerate(found):
            parts = []
            if len({r.variant for r in found}) > 1:
                parts.append(sanitize_model_name(run.variant.replace(" ", "-")))
            if len({r.shots for r in found}) > 1:
                parts.append(f"{run.shots}-shot")
            if len({(r.variant, r.shots) for r in found}) < len(found):  # told apart by something else
                parts.append(f"run-{i + 1}")
            run.folder = "_".join(parts)
    return found


def _name_folders(runs: list[_Run], task_runs: list[TaskRun]) -> None:
    """MMLU's runs and the task runs side by side: ``mmlu[_...]`` and ``tasks[_...]`` (one run
    alone: no folder)."""
    if not (runs and task_runs):
        if len(task_runs) > 1:
            for i, task_run in enumerate(task_runs):
                task_run.folder = f"tasks_run-{i + 1}"
        return
    for mmlu_run in runs:
        mmlu_run.folder = "mmlu" + (f"_{mmlu_run.folder}" if mmlu_run.folder else "")
    for i, task_run in enumerate(task_runs):
        task_run.folder = "tasks" + (f"_run-{i + 1}" if len(task_runs) > 1 else "")


def _renderer(recorded: dict[str, Any] | None, report: dict[str, Any], tokenizer: Any) -> Any:
    """The renderer of the prompts an evaluation recorded (``prompt_format``; None: plain)."""
    recorded = recorded or {}
    fmt = PromptFormat(
        recorded.get("chat_template"), bool(recorded.get("fewshot_as_multiturn")), recorded.get("system_instruction")
    )
    if fmt.is_chat and tokenizer is None:
        tokenizer = report_tokenizer(report)
    try:
        renderer = PromptRenderer(fmt, tokenizer)
    except ChatTemplateError as exc:
        raise ReportError(f"cannot render the chat prompts again: {exc}") from None
    template_sha256 = hash_string(renderer.template) if renderer.template is not None else None
    if fmt.is_chat and template_sha256 != recorded.get("chat_template_sha256"):
        raise ReportError(
            f"cannot render the chat prompts again: the tokenizer's template (sha256 "
            f"{str(template_sha256)[:12]}) is not the one the evaluations used (sha256 "
            f"{str(recorded.get('chat_template_sha256'))[:12]})"
        )
    return renderer


def report_tokenizer(report: dict[str, Any]) -> Any:
    """The tokenizer of the model the report was made with (its commit when known)."""
    settings = report.get("settings") or {}
    model = report.get("model") or {}
    name = settings.get("model") or model.get("model")
    if not name:
        raise ReportError("cannot render the chat prompts again: the report names no model")
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(
            str(name),
            revision=model.get("commit") or settings.get("revision"),
            trust_remote_code=bool(settings.get("trust_remote_code")),
        )
    except Exception as exc:  # noqa: BLE001 - OSError, ValueError...: any reason it cannot load
        raise ReportError(
            f"cannot render the chat prompts again: the tokenizer of {name} cannot be loaded ({first_line(exc)})"
        ) from None


def _one_limit(limits: set) -> Any:
    return next(iter(limits)) if len(limits) == 1 else None


def _sample(question: Any, prompt: str, continuations: tuple[str, ...], q: dict[str, Any]) -> dict[str, Any]:
    """One question as lm-eval's samples file has it (values stringified as lm-eval does)."""
    doc = {
        "question": question.question,
        "subject": question.subject,
        "choices": list(question.choices),
        "answer": question.answer,
    }
    lls = q["loglikelihoods"]
    # lm-eval's (loglikelihood, is_greedy) pairs, stringified; "None" for a report written
    # before is_greedy was kept.
    greedy = q.get("is_greedy") or [None] * len(lls)
    resps = [[str(ll), str(None if g is None else bool(g))] for ll, g in zip(lls, greedy)]
    return {
        "doc_id": question.index,
        "doc": doc,
        "target": str(question.answer),
        "arguments": {f"gen_args_{i}": {"arg_0": prompt, "arg_1": cont} for i, cont in enumerate(continuations)},
        "resps": [[r] for r in resps],
        "filtered_resps": resps,
        "filter": "none",
        "metrics": ["acc"],
        "doc_hash": hash_string(json.dumps(doc, indent=2, ensure_ascii=False)),
        "prompt_hash": hash_string(prompt),
        "target_hash": hash_string(str(question.answer)),
        "acc": 1.0 if q["prediction"] == q["target"] else 0.0,
    }
