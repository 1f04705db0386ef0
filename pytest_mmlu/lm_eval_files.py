"""lm-eval's output files, both ways: a ``--log_samples`` run as a baseline, and our results
written as lm-eval output.

lm-eval 0.4 (``--output_path DIR --log_samples``) writes, per run, under
``DIR/<model_name_sanitized>/``: ``results_<date>.json`` (per task: metrics, its config with
``num_fewshot``, ``n-shot``, ``n-samples``; per run: the model and the chat-template fields)
and one ``samples_<task>_<date>.jsonl`` per task (per question: ``doc_id``, ``doc``,
``arguments`` — the prompt of each choice —, ``filtered_resps`` — the log-likelihoods —,
and sha256 hashes of the doc, the prompt and the target). Values in the samples are strings
(lm-eval stringifies them); both are read and written that way.

- :class:`LmEvalBaseline` reads one run (its results file, or a folder holding one) and answers
  for an evaluation question by question, matched by subject and ``doc_id`` (the 0-based row of
  the test split, our ``index``). It refuses, saying why, a run made with other shots, another
  prompt template or chat template, or other data (each doc and prompt is compared with ours).
- :func:`write_lm_eval` writes a report's evaluations as lm-eval output (one run per number of
  shots), with lm-eval's hashes, so that tools reading lm-eval results read ours; a chat-template
  evaluation as lm-eval's ``--apply_chat_template`` run (rendered prompts, the template and its
  sha, few-shot turns, system instruction).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# lm-eval's lm_eval.utils.hash_string is the sha256 the report records a chat template by: one function.
from .chat import sha256 as hash_string
from .identity import LM_EVAL_RUN, of_entry, prompt_difference, prompt_identity, run_key, with_questions
from .records import own_evaluations
from .reports import ReportError

LETTERS = "ABCD"
# lm-eval's default MMLU task (lm_eval/tasks/mmlu/default/_default_template_yaml).
DOC_TO_TEXT = ("{{question.strip()}}\nA. {{choices[0]}}\nB. {{choices[1]}}\nC. {{choices[2]}}\n"
               "D. {{choices[3]}}\nAnswer:")
DEFAULT_TEMPLATE = {"doc_to_text": DOC_TO_TEXT, "doc_to_choice": list(LETTERS), "doc_to_target": "answer",
                    "target_delimiter": " ", "fewshot_delimiter": "\n\n", "output_type": "multiple_choice"}


def sanitize_model_name(name: str) -> str:
    """lm-eval's folder name for a model (``EvaluationTracker``: ``/`` and friends become ``__``)."""
    return re.sub(r"[\"<>:/|\\?*\[\]]+", "__", name)


def is_lm_eval_output(path: str | Path) -> bool:
    """A folder holding a ``results_*.json`` of lm-eval, or such a file."""
    target = Path(path)
    if target.is_dir():
        return any(target.rglob("results_*.json"))
    if target.is_file() and target.suffix == ".json":
        try:
            data = json.loads(target.read_text())
        except (OSError, ValueError):
            return False
        return isinstance(data, dict) and "configs" in data and "results" in data and "tests" not in data
    return False


# -- reading: an lm-eval run as a baseline ------------------------------------------------------
class LmEvalRun:
    """One lm-eval run: its results file and the samples of each task."""

    def __init__(self, results_path: Path, results: dict[str, Any], samples: dict[str, list[dict]]) -> None:
        self.path = results_path
        self.results = results
        self.samples = samples

    @classmethod
    def load(cls, path: str | Path) -> LmEvalRun:
        target = Path(path)
        if target.is_dir():
            found = sorted(target.rglob("results_*.json"))
            if not found:
                raise ReportError(f"{path}: no lm-eval results_*.json in this folder")
            if len(found) > 1:
                raise ReportError(f"{path}: holds {len(found)} lm-eval runs ({', '.join(p.name for p in found[:3])}"
                                  f"{', ...' if len(found) > 3 else ''}): give the results file of one")
            target = found[0]
        try:
            results = json.loads(target.read_text())
        except (OSError, ValueError) as exc:
            raise ReportError(f"{target}: not a readable lm-eval results file ({exc})") from None
        if not isinstance(results, dict) or "configs" not in results:
            raise ReportError(f"{target}: not an lm-eval results file (no 'configs')")
        date = target.stem.split("results_", 1)[-1] if "results_" in target.stem else None
        samples: dict[str, list[dict]] = {}
        for task in results["configs"]:
            files = sorted(target.parent.glob(f"samples_{task}_{date}.jsonl")) if date else []
            if not files:
                raise ReportError(f"{target}: no samples_{task}_{date}.jsonl beside it: a baseline needs "
                                  f"lm-eval's per-question output (run lm-eval with --log_samples)")
            try:
                samples[task] = [json.loads(line) for line in files[0].read_text().splitlines() if line.strip()]
            except (OSError, ValueError) as exc:
                raise ReportError(f"{files[0]}: not readable lm-eval samples ({exc})") from None
        return cls(target, results, samples)

    def identity(self) -> dict[str, Any]:
        """What the run evaluated, as far as an identity goes (``identity.py``): its own record
        where pytest-mmlu wrote it, else lm-eval's fields (the model's dtype, its arguments'
        quantization and adapter, the chat template and system instruction)."""
        results = self.results
        ours = results.get("pytest_mmlu_identity")
        if isinstance(ours, dict):
            return dict(ours)
        config = results.get("config") or {}
        args = _model_args(config.get("model_args"))
        found: dict[str, Any] = {
            "quantization": _lm_eval_quantization(args),
            "adapter": "unknown content (an lm-eval run)" if args.get("peft") or args.get("adapter") else None,
            "merge_adapter": str(args.get("merge_adapter", "")).lower() in ("1", "true", "yes", "on"),
            "prompt": prompt_identity({
                "chat_template": True if results.get("chat_template") else None,
                "chat_template_sha256": results.get("chat_template_sha"),
                "fewshot_as_multiturn": results.get("fewshot_as_multiturn"),
                "system_instruction": results.get("system_instruction")})}
        dtype = str(config.get("model_dtype") or "").removeprefix("torch.")
        if dtype:
            found["dtype"] = dtype  # else unknown: it never matches
        return found

    def task_of(self, subject: str) -> str | None:
        """The task holding ``subject``'s questions (lm-eval names it mmlu_<subject>)."""
        if f"mmlu_{subject}" in self.samples:
            return f"mmlu_{subject}"
        for task, rows in self.samples.items():
            if rows and (rows[0].get("doc") or {}).get("subject") == subject:
                return task
        return None



class LmEvalBaseline:
    """An lm-eval ``--log_samples`` run as the baseline of ``mmlu_no_regression`` gates.

    ``data`` (this run's MMLU data) gives our question and few-shot examples for each sample,
    so that every doc and prompt is compared; without it (data that cannot be read) the run
    cannot answer and says why. A run made with a chat template renders its prompts with it:
    ``tokenizer`` (a callable giving this run's tokenizer) renders ours the same way."""

    recording = False
    exists = True

    def __init__(self, run: LmEvalRun, path: str, data: Any = None, data_error: str | None = None,
                 tokenizer: Callable[[], Any] | None = None) -> None:
        self.run = run
        self.path = path
        self._data = data
        self._data_error = data_error
        self._tokenizer = tokenizer
        self._renderer: Any = None
        self._by_doc = {task: {int(s["doc_id"]): s for s in rows} for task, rows in run.samples.items()}

    @classmethod
    def load(cls, path: str, data: Any = None, tokenizer: Callable[[], Any] | None = None) -> LmEvalBaseline:
        """``data``: an ``MmluData``, an MMLU source to open, or None."""
        run = LmEvalRun.load(path)
        why = None
        if isinstance(data, str):
            try:
                from .data import MmluData

                data = MmluData(data)
            except Exception as exc:  # noqa: BLE001 - any reason the data cannot be opened
                data, why = None, f"the MMLU data cannot be read to check its questions ({exc})"
        if data is None and why is None:
            why = "no MMLU data to check its questions against"
        return cls(run, path, data, why, tokenizer)

    def entry(self, nodeid: str, ev: dict[str, Any]) -> dict[str, Any]:
        """The lm-eval run's answers to ``ev``'s questions as a baseline entry, or
        ``{"refused": why}`` when the run cannot answer for this evaluation."""
        results = self.run.results
        questions, per_subject = [], {}
        run_identity = self.run.identity()
        # Prompts of another format are refused by the gate, naming the difference; prompts of
        # this run's format are compared one by one (other few-shot examples, another template).
        same_format = prompt_difference(run_identity.get("prompt"), of_entry(ev).get("prompt")) is None
        for subject in ev["subjects"]:
            task = self.run.task_of(subject)
            if task is None:
                return {"refused": f"the lm-eval run has no task for {subject} (it ran "
                                   f"{', '.join(sorted(self.run.samples)) or 'none'})"}
            config = results["configs"][task]
            shots = config.get("num_fewshot", (results.get("n-shot") or {}).get(task))
            if shots is None or int(shots) != ev["shots"]:
                return {"refused": f"{task} was run {shots}-shot, this evaluation is {ev['shots']}-shot"}
            differs = [k for k, v in DEFAULT_TEMPLATE.items() if k in config and config[k] != v]
            if differs:
                return {"refused": f"{task} was made with another prompt template than lm-eval's "
                                   f"default MMLU ({', '.join(differs)} differ)"}
        for q in ev["questions"]:
            subject, index = q["subject"], q["index"]
            task = self.run.task_of(subject)
            sample = self._by_doc[task].get(index)
            if sample is None:
                have = sorted(self._by_doc[task])
                span = f"doc_ids {have[0]}-{have[-1]}" if have else "no samples"
                return {"refused": f"the lm-eval run has no sample for {subject}#{index} ({task} has "
                                   f"{span}; run it with a larger --limit)"}
            reason = self._other_question(sample, subject, index, ev["shots"], same_format)
            if reason:
                return {"refused": reason}
            lls = [float(r[0]) for r in sample["filtered_resps"]]
            greedy = [str(r[1]) if len(r) > 1 else None for r in sample["filtered_resps"]]
            questions.append({"subject": subject, "index": index, "target": int(sample["target"]),
                              "prediction": max(range(len(lls)), key=lambda i: (lls[i], -i)),
                              "loglikelihoods": lls,
                              **({"is_greedy": [g == "True" for g in greedy]}
                                 if all(g in ("True", "False") for g in greedy) else {})})
        for q in questions:
            counts = per_subject.setdefault(q["subject"], [0, 0])
            counts[0] += q["prediction"] == q["target"]
            counts[1] += 1
        # Every doc was checked equal to the data at hand: the run was made on that data. The rest
        # of what the run was (variant, dtype, prompts) is its own, and gates.regression compares it.
        identity = with_questions({**run_identity, "data": self._data.fingerprint(ev["subjects"]),
                                   "shots": ev["shots"]}, ((q["subject"], q["index"]) for q in questions))
        return {"identity": identity, "questions": questions,
                "per_subject": {s: {"accuracy": c / n, "n": n} for s, (c, n) in per_subject.items()}}

    def _other_question(self, sample: dict[str, Any], subject: str, index: int, shots: int,
                        compare_prompts: bool = True) -> str | None:
        if self._data is None:
            return f"{self._data_error}"
        found = _question_in(self._data, subject, index, shots)
        if found is None:
            return f"this run's data has no {subject}#{index}"
        question, examples = found
        doc = sample.get("doc") or {}
        if (str(doc.get("question")), [str(c) for c in doc.get("choices", [])], str(doc.get("answer"))) != (
                question.question, list(question.choices), str(question.answer)):
            return (f"made on other data: lm-eval's {subject}#{index} is not this run's question "
                    f"(another MMLU copy or version)")
        if not compare_prompts:
            return None
        prompt = (sample.get("arguments") or {}).get("gen_args_0", {}).get("arg_0")
        if prompt is None:
            return f"lm-eval's sample for {subject}#{index} holds no prompt (arguments)"
        try:
            ours = self._render(subject, examples, question)
        except ReportError as exc:
            return str(exc)
        if prompt != ours:
            return (f"lm-eval's prompt for {subject}#{index} differs from this run's (other few-shot "
                    f"examples or template)")
        return None

    def _render(self, subject: str, examples: Any, question: Any) -> str:
        """Our prompt for ``question`` as the lm-eval run's format renders it: plain, or with
        its chat template (its text, recorded in the results file) through our tokenizer."""
        from .chat import PromptFormat, PromptRenderer

        if self._renderer is None:
            results = self.run.results
            template = results.get("chat_template")
            fmt = PromptFormat(True if template else None, bool(results.get("fewshot_as_multiturn")),
                               results.get("system_instruction"))
            if not template:
                self._renderer = PromptRenderer(fmt)
            else:
                try:
                    tokenizer = self._tokenizer() if self._tokenizer is not None else None
                except Exception as exc:  # noqa: BLE001 - any reason the tokenizer cannot load
                    raise ReportError(f"cannot render this run's prompts with the lm-eval run's chat template "
                                      f"to compare them: {exc}") from None
                if tokenizer is None:
                    raise ReportError("cannot render this run's prompts with the lm-eval run's chat template "
                                      "to compare them: no tokenizer")
                renderer = PromptRenderer(PromptFormat(), tokenizer)
                renderer.format, renderer.template = fmt, template
                self._renderer = renderer
        return self._renderer.contexts(subject, examples, [question])[0]


def _model_args(raw: Any) -> dict[str, Any]:
    """lm-eval's ``model_args`` as recorded: a dict, or its command-line string ``k=v,k=v``."""
    if isinstance(raw, dict):
        return raw
    pairs = [part.split("=", 1) for part in str(raw or "").split(",") if "=" in part]
    return {k.strip(): v.strip() for k, v in pairs}


def _lm_eval_quantization(args: dict[str, Any]) -> str:
    """The quantization an lm-eval run's model arguments asked for: ours (``quantization=``),
    or the hf backend's bitsandbytes flags."""
    if args.get("quantization"):
        return str(args["quantization"])
    if str(args.get("load_in_8bit", "")).lower() in ("true", "1"):
        return "bnb-int8"
    if str(args.get("load_in_4bit", "")).lower() in ("true", "1"):
        kind = str(args.get("bnb_4bit_quant_type") or "fp4")
        return "nf4" if kind == "nf4" else f"bnb-{kind}"
    return "none"


def _question_in(data: Any, subject: str, index: int, shots: int) -> Any:
    """Our question ``subject#index`` and its few-shot examples, or None where the data has none."""
    try:
        rows = data.split(subject, "test")
        examples = data.shots(subject, shots)
    except Exception:  # noqa: BLE001 - a subject the data lacks: no such question
        return None
    return (rows[index], examples) if 0 <= index < len(rows) else None


# -- writing: our results as lm-eval output -----------------------------------------------------
def write_lm_eval(folder: str | Path, report: dict[str, Any], data: Any, tokenizer: Any = None) -> list[Path]:
    """Write ``report``'s evaluations as lm-eval output under ``folder``: for each number of
    shots one run (``[<k>-shot/]<model>/results_<date>.json`` and one ``samples_mmlu_<subject>_
    <date>.jsonl`` per subject; a question several evaluations share is written once).
    ``data``: the MmluData (or its source) the report was made on, for the docs and prompts.

    Evaluations made with a chat template or a system instruction are written as lm-eval
    writes a run with ``--apply_chat_template`` (``--fewshot_as_multiturn``,
    ``--system_instruction``): the rendered prompts, and the run's template, its sha256 and
    the instruction in the results file. The prompts are rendered again with ``tokenizer``
    (default: the report's model's, loaded now), which must hold the template the
    evaluation recorded (same sha256)."""
    from importlib.metadata import PackageNotFoundError, version

    from . import __version__

    if isinstance(data, str) or data is None:
        from .data import DataError, MmluData

        try:
            data = MmluData(str(data))
        except DataError as exc:
            raise ReportError(f"cannot read the MMLU data for the samples: {exc}") from None
    runs = _runs_of(report)
    for run in runs:  # the docs and prompts written are the data's: it must be the evaluations' data
        for subjects, recorded in run.fingerprints:
            if recorded != data.fingerprint(subjects):
                raise ReportError(f"the report's evaluations of {','.join(subjects)} were not made on the data "
                                  f"{data.label} (fingerprint {str(recorded)[:12] or 'not recorded'}, the data's "
                                  f"{data.fingerprint(subjects)[:12]}): give the data they were made on")
    model = report.get("model") or {}
    model_name = str(model.get("model") or model.get("name") or "pytest-mmlu")
    try:
        lm_eval_version = version("lm_eval")
    except PackageNotFoundError:
        lm_eval_version = None
    written = []
    date = time.strftime("%Y-%m-%dT%H-%M-%S", time.gmtime()) + f".{int(time.time() * 1e6) % 10**6:06d}"
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
            samples = [_sample(question, prompt, fmt.continuations, questions[question.index])
                       for question, prompt in zip(asked, prompts)]
            samples_of[task] = samples
            accs = [s["acc"] for s in samples]
            n = len(accs)
            mean = sum(accs) / n
            stderr = (sum((a - mean) ** 2 for a in accs) / (n - 1) / n) ** 0.5 if n > 1 else float("nan")
            results[task] = {"name": task, "alias": subject, "sample_len": n, "acc,none": mean,
                             "acc_stderr,none": stderr if n > 1 else "N/A"}
            configs[task] = {
                "task": task, "task_alias": subject, "dataset_path": str(report.get("data")),
                "dataset_name": subject, "test_split": "test", "fewshot_split": "dev",
                **DEFAULT_TEMPLATE, "doc_to_choice": list(LETTERS),
                "description": f"The following are multiple choice questions (with answers) about "
                               f"{subject.replace('_', ' ')}.\n\n",
                "fewshot_config": {"sampler": "first_n", "split": "dev"}, "num_fewshot": shots,
                "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
                "repeats": 1, "metadata": {"version": 1.0},
                "n_test_questions": len(rows)}
        document = {
            "results": results, "group_subtasks": {}, "configs": configs,
            "versions": {t: 1.0 for t in results}, "n-shot": {t: shots for t in results},
            "higher_is_better": {t: {"acc": True} for t in results},
            "n-samples": {t: {"original": configs[t].pop("n_test_questions"), "effective": results[t]["sample_len"]}
                          for t in results},
            "config": {"model": "pytest-mmlu", "model_args": {"pretrained": model_name},
                       "model_dtype": model.get("dtype"), "model_revision": model.get("revision"),
                       "model_sha": model.get("commit") or "", "device": model.get("device"),
                       "limit": _one_limit(run.limits), "bootstrap_iters": 0},
            "date": time.time(), "lm_eval_version": lm_eval_version, "pytest_mmlu_version": __version__,
            "task_hashes": {t: hash_string("".join(s["doc_hash"] + s["prompt_hash"] + s["target_hash"]
                                                   for s in samples_of[t])) for t in results},
            "model_source": "pytest-mmlu", "model_name": model_name,
            "model_name_sanitized": sanitize_model_name(model_name),
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
            if ev.get("accuracy") is None or not ev.get("n"):
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


def _renderer(recorded: dict[str, Any] | None, report: dict[str, Any], tokenizer: Any) -> Any:
    """The renderer of the prompts an evaluation recorded (``prompt_format``; None: plain)."""
    from .chat import ChatTemplateError, PromptFormat, PromptRenderer

    recorded = recorded or {}
    fmt = PromptFormat(recorded.get("chat_template"), bool(recorded.get("fewshot_as_multiturn")),
                       recorded.get("system_instruction"))
    if fmt.is_chat and tokenizer is None:
        tokenizer = report_tokenizer(report)
    try:
        renderer = PromptRenderer(fmt, tokenizer)
    except ChatTemplateError as exc:
        raise ReportError(f"cannot render the chat prompts again: {exc}") from None
    if fmt.is_chat and hash_string(renderer.template) != recorded.get("chat_template_sha256"):
        raise ReportError(f"cannot render the chat prompts again: the tokenizer's template (sha256 "
                          f"{hash_string(renderer.template)[:12]}) is not the one the evaluations used (sha256 "
                          f"{str(recorded.get('chat_template_sha256'))[:12]})")
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
        return AutoTokenizer.from_pretrained(str(name), revision=model.get("commit") or settings.get("revision"),
                                             trust_remote_code=bool(settings.get("trust_remote_code")))
    except Exception as exc:  # noqa: BLE001 - OSError, ValueError...: any reason it cannot load
        raise ReportError(f"cannot render the chat prompts again: the tokenizer of {name} cannot be "
                          f"loaded ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None


def _one_limit(limits: set) -> Any:
    return next(iter(limits)) if len(limits) == 1 else None


def _sample(question: Any, prompt: str, continuations: tuple[str, ...], q: dict[str, Any]) -> dict[str, Any]:
    """One question as lm-eval's samples file has it (values stringified as lm-eval does)."""
    doc = {"question": question.question, "subject": question.subject, "choices": list(question.choices),
           "answer": question.answer}
    lls = q["loglikelihoods"]
    # lm-eval's (loglikelihood, is_greedy) pairs, stringified; "None" for a report written
    # before is_greedy was kept.
    greedy = q.get("is_greedy") or [None] * len(lls)
    resps = [[str(ll), str(None if g is None else bool(g))] for ll, g in zip(lls, greedy)]
    return {
        "doc_id": question.index, "doc": doc, "target": str(question.answer),
        "arguments": {f"gen_args_{i}": {"arg_0": prompt, "arg_1": cont} for i, cont in enumerate(continuations)},
        "resps": [[r] for r in resps], "filtered_resps": resps,
        "filter": "none", "metrics": ["acc"],
        "doc_hash": hash_string(json.dumps(doc, indent=2, ensure_ascii=False)),
        "prompt_hash": hash_string(prompt), "target_hash": hash_string(str(question.answer)),
        "acc": 1.0 if q["prediction"] == q["target"] else 0.0,
    }
