"""An lm-eval ``--log_samples`` run as a baseline (``LmEvalBaseline``).

It answers for an evaluation question by question, matched by subject and ``doc_id`` (the
0-based row of the test split, our ``index``), and refuses, saying why, a run made with other
shots, another prompt template, or other data (each doc and prompt is compared with ours).
What the run was (its variant, dtype, prompts) is its identity (``LmEvalRun.identity``): the
gate compares it with the evaluation's (``identity.BASELINE``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..identity import of_entry, with_questions
from ..mmlu.chat import PromptFormat, PromptRenderer
from ..mmlu.data import MmluData
from ..options import says_true
from ..prompt_identity import prompt_difference, prompt_identity
from ..text import first_line
from .lm_eval_format import DEFAULT_TEMPLATE
from .lm_eval_tasks import Prepare, is_task_entry, task_baseline_entry
from .report import ReportError


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
                raise ReportError(
                    f"{path}: holds {len(found)} lm-eval runs ({', '.join(p.name for p in found[:3])}"
                    f"{', ...' if len(found) > 3 else ''}): give the results file of one"
                )
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
                raise ReportError(
                    f"{target}: no samples_{task}_{date}.jsonl beside it: a baseline needs "
                    f"lm-eval's per-question output (run lm-eval with --log_samples)"
                )
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
        adapter = args.get("peft") or args.get("adapter")
        found: dict[str, Any] = {
            "quantization": _lm_eval_quantization(args),
            "adapter": "unknown content (an lm-eval run)" if adapter else None,
            "adapter_name": Path(str(adapter).rstrip("/")).name if adapter else None,
            "merge_adapter": says_true(args.get("merge_adapter", "")),
            "prompt": prompt_identity(
                {
                    "chat_template": True if results.get("chat_template") else None,
                    "chat_template_sha256": results.get("chat_template_sha"),
                    "fewshot_as_multiturn": results.get("fewshot_as_multiturn"),
                    "system_instruction": results.get("system_instruction"),
                }
            ),
        }
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

    def __init__(
        self,
        run: LmEvalRun,
        path: str,
        data: Any = None,
        data_error: str | None = None,
        tokenizer: Callable[[], Any] | None = None,
        prepare: Prepare | None = None,
    ) -> None:
        self.run = run
        self.path = path
        self._data = data
        self._data_error = data_error
        self._tokenizer = tokenizer
        self._prepare = prepare
        self._renderer: Any = None
        self._by_doc = {task: {int(s["doc_id"]): s for s in rows} for task, rows in run.samples.items()}

    @classmethod
    def load(
        cls, path: str, data: Any = None, tokenizer: Callable[[], Any] | None = None, prepare: Prepare | None = None
    ) -> LmEvalBaseline:
        """``data``: an ``MmluData``, an MMLU source to open, or None."""
        run = LmEvalRun.load(path)
        why = None
        if isinstance(data, str):
            try:
                data = MmluData(data)
            except Exception as exc:  # noqa: BLE001 - any reason the data cannot be opened
                data, why = None, f"the MMLU data cannot be read to check its questions ({first_line(exc)})"
        if data is None and why is None:
            why = "no MMLU data to check its questions against"
        return cls(run, path, data, why, tokenizer, prepare)

    def entry(self, nodeid: str, ev: dict[str, Any]) -> dict[str, Any]:
        """The lm-eval run's answers to ``ev``'s questions as a baseline entry, or
        ``{"refused": why}`` when the run cannot answer for this evaluation."""
        if is_task_entry(ev):
            return task_baseline_entry(self.run, ev, self._prepare)
        results = self.run.results
        questions: list[dict[str, Any]] = []
        per_subject: dict[str, list[int]] = {}
        task_of: dict[str, str] = {}
        run_identity = self.run.identity()
        # Prompts of another format are refused by the gate, naming the difference; prompts of
        # this run's format are compared one by one (other few-shot examples, another template).
        same_format = prompt_difference(run_identity.get("prompt"), of_entry(ev).get("prompt")) is None
        for subject in ev["subjects"]:
            task = self.run.task_of(subject)
            if task is None:
                return {
                    "refused": f"the lm-eval run has no task for {subject} (it ran "
                    f"{', '.join(sorted(self.run.samples)) or 'none'})"
                }
            task_of[subject] = task
            config = results["configs"][task]
            shots = config.get("num_fewshot", (results.get("n-shot") or {}).get(task))
            if shots is None or int(shots) != ev["shots"]:
                return {"refused": f"{task} was run {shots}-shot, this evaluation is {ev['shots']}-shot"}
            differs = [k for k, v in DEFAULT_TEMPLATE.items() if k in config and config[k] != v]
            if differs:
                return {
                    "refused": f"{task} was made with another prompt template than lm-eval's "
                    f"default MMLU ({', '.join(differs)} differ)"
                }
        for q in ev["questions"]:
            subject, index = q["subject"], q["index"]
            task = task_of[subject]
            sample = self._by_doc[task].get(index)
            if sample is None:
                have = sorted(self._by_doc[task])
                span = f"doc_ids {have[0]}-{have[-1]}" if have else "no samples"
                return {
                    "refused": f"the lm-eval run has no sample for {subject}#{index} ({task} has "
                    f"{span}; run it with a larger --limit)"
                }
            reason = self._other_question(sample, subject, index, ev["shots"], same_format)
            if reason:
                return {"refused": reason}
            lls = [float(r[0]) for r in sample["filtered_resps"]]
            greedy = [str(r[1]) if len(r) > 1 else None for r in sample["filtered_resps"]]
            questions.append(
                {
                    "subject": subject,
                    "index": index,
                    "target": int(sample["target"]),
                    "prediction": max(range(len(lls)), key=lambda i: (lls[i], -i)),
                    "loglikelihoods": lls,
                    **(
                        {"is_greedy": [g == "True" for g in greedy]}
                        if all(g in ("True", "False") for g in greedy)
                        else {}
                    ),
                }
            )
        for q in questions:
            counts = per_subject.setdefault(q["subject"], [0, 0])
            counts[0] += q["prediction"] == q["target"]
            counts[1] += 1
        # Every doc was checked equal to the data at hand: the run was made on that data. The rest
        # of what the run was (variant, dtype, prompts) is its own, and regression.regression compares it.
        identity = with_questions(
            {**run_identity, "data": self._data.fingerprint(ev["subjects"]), "shots": ev["shots"]},
            ((q["subject"], q["index"]) for q in questions),
        )
        return {
            "identity": identity,
            "questions": questions,
            "per_subject": {s: {"accuracy": c / n, "n": n} for s, (c, n) in per_subject.items()},
        }

    def _other_question(
        self, sample: dict[str, Any], subject: str, index: int, shots: int, compare_prompts: bool = True
    ) -> str | None:
        if self._data is None:
            return f"{self._data_error}"
        found = _question_in(self._data, subject, index, shots)
        if found is None:
            return f"this run's data has no {subject}#{index}"
        question, examples = found
        doc = sample.get("doc") or {}
        if (str(doc.get("question")), [str(c) for c in doc.get("choices", [])], str(doc.get("answer"))) != (
            question.question,
            list(question.choices),
            str(question.answer),
        ):
            return (
                f"made on other data: lm-eval's {subject}#{index} is not this run's question "
                f"(another MMLU copy or version)"
            )
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
            return (
                f"lm-eval's prompt for {subject}#{index} differs from this run's (other few-shot examples or template)"
            )
        return None

    def _render(self, subject: str, examples: Any, question: Any) -> str:
        """Our prompt for ``question`` as the lm-eval run's format renders it: plain, or with
        its chat template (its text, recorded in the results file) through our tokenizer."""

        if self._renderer is None:
            results = self.run.results
            template = results.get("chat_template")
            fmt = PromptFormat(
                True if template else None, bool(results.get("fewshot_as_multiturn")), results.get("system_instruction")
            )
            if not template:
                self._renderer = PromptRenderer(fmt)
            else:
                try:
                    tokenizer = self._tokenizer() if self._tokenizer is not None else None
                except Exception as exc:  # noqa: BLE001 - any reason the tokenizer cannot load
                    raise ReportError(
                        "cannot render this run's prompts with the lm-eval run's chat template to compare "
                        f"them: {first_line(exc)}"
                    ) from None
                if tokenizer is None:
                    raise ReportError(
                        "cannot render this run's prompts with the lm-eval run's chat template "
                        "to compare them: no tokenizer"
                    )
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
    if says_true(args.get("load_in_8bit", "")):
        return "bnb-int8"
    if says_true(args.get("load_in_4bit", "")):
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
