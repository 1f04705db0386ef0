"""lm-eval task evaluations (``@pytest.mark.lm_eval_task``) as lm-eval ``--log_samples`` files,
both ways: written (``write_task_runs``) as lm-eval writes a run of those tasks, and read as a
baseline (``task_baseline_entry``).

Both sides go through the task's own lm-eval objects, prepared as for the evaluation
(``tasks.prepared``): the documents, prompts and targets written are lm-eval's, and every
metric in a sample is lm-eval's ``process_results`` of the log-likelihoods. A run read as a
baseline answers only where each document, each request's prompt and continuation, and
each target equal this evaluation's, its tasks' versions and few-shot counts are ours, and
its logged metric is what lm-eval computes from its logged log-likelihoods.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..identity import LM_EVAL_TASK_RUN, of_entry, run_key, with_questions
from ..mmlu.chat import sha256 as hash_string  # lm-eval's hash_string: the sha256 of a text
from ..mmlu.results import QuestionResult
from ..records import own_evaluations
from ..tasks.prepared import doc_hash
from ..tasks.registry import TaskError
from .report import ReportError

Prepare = Callable[[Mapping[str, Any]], Any]  # a task entry -> its PreparedTask


def is_task_entry(entry: Mapping[str, Any]) -> bool:
    return bool(entry.get("task"))


def rescored(prepared: Any, leaf: str, resps: Mapping[int, list[tuple[float, bool]]]) -> dict[int, tuple[list, dict]]:
    """lm-eval's metrics of ``leaf``'s documents from their responses (``doc_id`` -> one
    (log-likelihood, is_greedy) per request, in request order): per document, its Instances
    (copies, the prepared ones untouched) and ``process_results``' metrics."""
    from ..tasks.evaluation import metrics_of  # the engine's module: torch

    task = prepared.tasks.tasks[leaf]
    instances = []
    for inst in sorted(prepared.instances[leaf], key=lambda i: (i.doc_id, i.idx)):
        if inst.doc_id in resps:
            own = copy.copy(inst)
            own.resps, own.filtered_resps = [resps[inst.doc_id][inst.idx]], {}
            instances.append(own)
    docs, _ = metrics_of(task, instances)
    by_doc: dict[int, list] = {}
    for inst in instances:
        by_doc.setdefault(inst.doc_id, []).append(inst)
    return {d.doc_id: (by_doc[d.doc_id], d.metrics) for d in docs}


def task_hashes(samples_of: Mapping[str, list[dict[str, Any]]]) -> dict[str, str]:
    """lm-eval's ``task_hashes`` of a results file: per task, the hash of its samples' hashes."""
    return {
        task: hash_string("".join(s["doc_hash"] + s["prompt_hash"] + s["target_hash"] for s in samples))
        for task, samples in samples_of.items()
    }


# -- writing ---------------------------------------------------------------------------------
@dataclass
class TaskRun:
    """Task evaluations of one model as loaded (``identity.LM_EVAL_TASK_RUN``): one lm-eval run,
    each leaf task once."""

    identity: dict[str, Any]
    variant: str
    leaves: dict[str, Mapping[str, Any]] = field(default_factory=dict)  # leaf task -> the entry
    folder: str = ""


def task_runs_of(report: Mapping[str, Any]) -> list[TaskRun]:
    """The report's task evaluations grouped into lm-eval runs; a leaf task evaluated again with
    another few-shot count or configuration starts another run."""
    runs: list[tuple[str, TaskRun]] = []
    for test in report["tests"]:
        for ev in own_evaluations(test):
            if not is_task_entry(ev) or ev.get("accuracy") is None or not ev.get("n"):
                continue
            identity = of_entry(ev)
            key = run_key(identity, LM_EVAL_TASK_RUN)
            task = identity.get("task") or {}
            for leaf in ev["subjects"]:
                fits = None
                for run_key_, run in runs:
                    other = run.leaves.get(leaf)
                    same = other is None or (
                        of_entry(other).get("shots") == identity.get("shots")
                        and (of_entry(other).get("task") or {}).get("configs") == task.get("configs")
                    )
                    if run_key_ == key and same:
                        fits = run
                        break
                if fits is None:
                    kept = {k: v for k, v in identity.items() if k not in ("data", "questions", "n", "task", "shots")}
                    fits = TaskRun(kept, ev.get("variant") or "full")
                    runs.append((key, fits))
                held = fits.leaves.get(leaf)
                if held is None or len(held["questions"]) < len(ev["questions"]):
                    fits.leaves[leaf] = ev  # the evaluation with the most documents of it
    return [run for _, run in runs]


def write_task_run(out: Path, run: TaskRun, prepare: Prepare, date: str, header: Mapping[str, Any]) -> list[Path]:
    """One lm-eval run of ``run``'s tasks under ``out``: ``results_<date>.json`` and a
    ``samples_<task>_<date>.jsonl`` per task. ``header``: the results file's run fields."""
    from lm_eval.utils import handle_non_serializable

    from ..tasks.evaluation import aggregate  # the engine's module: torch

    results: dict[str, Any] = {}
    configs: dict[str, Any] = {}
    samples_of: dict[str, list[dict[str, Any]]] = {}
    versions, n_shot, higher, n_samples = {}, {}, {}, {}
    for leaf, ev in run.leaves.items():
        prepared = prepare(ev)
        if prepared.fingerprint != of_entry(ev).get("data"):
            raise ReportError(
                f"cannot write lm-eval samples of {leaf}: its documents or prompts are not the ones "
                f"evaluated (fingerprint {str(of_entry(ev).get('data'))[:19]}, now {prepared.fingerprint[:19]})"
            )
        task = prepared.tasks.tasks[leaf]
        asked = [q for q in ev["questions"] if q["subject"] == leaf]
        resps = {
            q["index"]: list(zip(q["loglikelihoods"], q.get("is_greedy") or [False] * len(q["loglikelihoods"])))
            for q in asked
        }
        scored = rescored(prepared, leaf, resps)
        samples: list[dict[str, Any]] = []
        values: dict[str, list[Any]] = {}
        for doc_id in sorted(scored):
            instances, metrics = scored[doc_id]
            doc, target = instances[0].doc, task.doc_to_target(instances[0].doc)
            pairs = [[str(float(ll)), str(bool(g))] for ll, g in resps[doc_id]]
            sample = {
                "doc_id": doc_id,
                "doc": doc,
                "target": str(target),
                "arguments": {
                    f"gen_args_{i}": {f"arg_{j}": arg for j, arg in enumerate(inst.arguments)}
                    for i, inst in enumerate(instances)
                },
                "resps": [[pair] for pair in pairs],
                "filtered_resps": pairs,
                "filter": "none",
                "metrics": list(metrics),
                "doc_hash": doc_hash(doc),
                "prompt_hash": hash_string(instances[0].arguments[0]),
                "target_hash": hash_string(str(target)),
                **metrics,
            }
            samples.append(sample)
            for metric, value in metrics.items():
                values.setdefault(metric, []).append(value)
        samples_of[leaf] = samples
        results[leaf] = {"name": leaf, "alias": leaf, "sample_len": len(samples)} | {
            f"{metric},none": value for metric, value in aggregate(task, values).items()
        }
        configs[leaf] = json.loads(json.dumps(task.dump_config(), default=handle_non_serializable))
        versions[leaf] = task.VERSION
        n_shot[leaf] = prepared.shots[leaf]
        higher[leaf] = dict(task.higher_is_better())
        n_samples[leaf] = {"original": len(task.eval_docs), "effective": len(samples)}
    groups = {g: m for ev in run.leaves.values() for g, m in ((ev.get("task") or {}).get("groups") or {}).items()}
    document = {
        "results": results,
        # lm-eval's group -> its tasks, for groups whose tasks are all in this run
        "group_subtasks": {g: list(m) for g, m in groups.items() if all(t in results for t in m)},
        "configs": configs,
        "versions": versions,
        "n-shot": n_shot,
        "higher_is_better": higher,
        "n-samples": n_samples,
        **header,
        "task_hashes": task_hashes(samples_of),
        # What the run evaluated (identity.py, less the questions and the task)
        "pytest_mmlu_identity": run.identity,
    }
    if run.identity.get("dtype"):
        document["config"] = {**document.get("config", {}), "model_dtype": f"torch.{run.identity['dtype']}"}
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"results_{date}.json"
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
    written = [path]
    for leaf, samples in samples_of.items():
        path = out / f"samples_{leaf}_{date}.jsonl"
        path.write_text(
            "".join(json.dumps(s, ensure_ascii=False, default=handle_non_serializable) + "\n" for s in samples),
            encoding="utf-8",
        )
        written.append(path)
    return written


# -- reading: an lm-eval run of tasks as a baseline -----------------------------------------------
def arguments_in_order(given: Mapping[str, Mapping[str, Any]]) -> list[list[Any]]:
    """A sample's ``arguments`` (``gen_args_<i>``: ``{"arg_<j>": ...}``) as lists, by request
    number (``gen_args_10`` after ``gen_args_9``)."""
    ordered = sorted(given.items(), key=lambda item: int(item[0].rsplit("_", 1)[-1]))
    return [[a.get(f"arg_{j}") for j in range(len(a))] for _, a in ordered]


def task_baseline_entry(run: Any, ev: Mapping[str, Any], prepare: Prepare | None) -> dict[str, Any]:
    """The lm-eval run ``run`` (``lm_eval_read.LmEvalRun``) as the baseline entry of the task
    evaluation ``ev``, or ``{"refused": why}``. ``prepare`` gives ``ev``'s tasks, prepared as
    for the evaluation (their documents and requests are compared one by one)."""
    if prepare is None:
        return {"refused": "no lm-eval tasks loaded to check the run's documents against"}
    try:
        prepared = prepare(ev)
    except TaskError as exc:
        return {"refused": str(exc)}
    if prepared.fingerprint != of_entry(ev).get("data"):
        return {
            "refused": f"the tasks of {ev['task']['name']} now make other documents or prompts than the "
            "evaluation was made on: its baseline cannot be checked"
        }
    results = run.results
    metric = ev["task"]["metric"]
    questions: list[dict[str, Any]] = []
    wanted: dict[str, list[int]] = {}
    for q in ev["questions"]:
        wanted.setdefault(q["subject"], []).append(q["index"])
    for leaf, doc_ids in wanted.items():
        if leaf not in run.samples:
            return {
                "refused": f"the lm-eval run has no samples of task {leaf} (it ran {', '.join(sorted(run.samples))})"
            }
        config = results["configs"].get(leaf) or {}
        shots = config.get("num_fewshot", (results.get("n-shot") or {}).get(leaf))
        ours = prepared.shots[leaf]
        if shots is None or int(shots) != ours:
            return {"refused": f"{leaf} was run {shots}-shot, this evaluation is {ours}-shot"}
        version = (results.get("versions") or {}).get(leaf)
        task = prepared.tasks.tasks[leaf]
        if str(version) != str(task.VERSION):
            return {"refused": f"{leaf} was run at task version {version}, this evaluation's is {task.VERSION}"}
        by_doc = {int(s["doc_id"]): s for s in run.samples[leaf] if s.get("filter", "none") == "none"}
        mine: dict[int, list[Any]] = {}
        for inst in prepared.instances[leaf]:
            mine.setdefault(inst.doc_id, []).append(inst)
        resps = {}
        for doc_id in doc_ids:
            sample = by_doc.get(doc_id)
            if sample is None:
                return {"refused": f"the lm-eval run has no sample for {leaf}#{doc_id} (run it with a larger --limit)"}
            if doc_id not in mine:
                return {"refused": f"this evaluation's tasks hold no document {leaf}#{doc_id}"}
            instances = sorted(mine[doc_id], key=lambda i: i.idx)
            arguments = arguments_in_order(sample.get("arguments") or {})
            target = str(task.doc_to_target(instances[0].doc))
            if sample.get("doc_hash") != doc_hash(instances[0].doc) or str(sample.get("target")) != target:
                return {"refused": f"made on other data: lm-eval's {leaf}#{doc_id} is not this evaluation's document"}
            if arguments != [list(inst.arguments) for inst in instances]:
                return {
                    "refused": f"lm-eval's prompts for {leaf}#{doc_id} differ from this evaluation's "
                    "(other few-shot examples or template)"
                }
            pairs = sample.get("filtered_resps") or []
            if len(pairs) != len(instances):
                return {
                    "refused": f"lm-eval's sample for {leaf}#{doc_id} holds {len(pairs)} responses "
                    f"for its {len(instances)} requests"
                }
            resps[doc_id] = [(float(p[0]), str(p[1]) == "True") for p in pairs]
        for doc_id, (_, metrics) in rescored(prepared, leaf, resps).items():
            logged = by_doc[doc_id].get(metric)
            value = float(metrics[metric])
            both_nan = logged is not None and math.isnan(float(logged)) and math.isnan(value)
            if logged is None or not (both_nan or math.isclose(float(logged), value, abs_tol=1e-6)):
                return {
                    "refused": f"lm-eval's {metric} of {leaf}#{doc_id} is {logged}, and lm-eval computes {value} "
                    "from its log-likelihoods here: another metric definition"
                }
            question = QuestionResult.scored(
                leaf,
                doc_id,
                prepared.target(leaf, mine[doc_id][0].doc),
                tuple(ll for ll, _ in resps[doc_id]),
                tuple(g for _, g in resps[doc_id]),
                score=value,
            )
            questions.append(
                {
                    "subject": leaf,
                    "index": doc_id,
                    "target": question.target,
                    "prediction": question.prediction,
                    "loglikelihoods": list(question.loglikelihoods),
                    "is_greedy": list(question.is_greedy or ()),
                    "score": value,
                }
            )
    # Every document, prompt and target was checked equal to this evaluation's, and each task's
    # version and shots: the run evaluated this task. What else the run was (variant, dtype) is
    # its own, and regression.regression compares it.
    ours = of_entry(ev)
    identity = with_questions(
        {**run.identity(), "data": ours.get("data"), "shots": ours.get("shots"), "task": ours.get("task")},
        ((q["subject"], q["index"]) for q in questions),
    )
    return {"identity": identity, "questions": questions, "task": ev["task"]}
