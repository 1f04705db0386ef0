"""One merge rule for everything that joins parts of a run: xdist workers, a baseline update,
and CI shards.

- **Whole tests** (xdist workers, ``--mmlu-update-baseline``): each test's record comes from
  exactly one part, so records are joined by test id, the newer part winning
  (:func:`union_by_nodeid`).
- **Shards** (``--mmlu-shard I/N``, then ``pytest-mmlu merge``): every shard ran every test on
  its own questions, so a test's evaluations are joined question by question
  (:func:`merge_shards`) and every gate the tests declared is judged again on the whole
  (:func:`judge_merged`), with the gates of ``gates.py``: the same verdicts, lines and summary
  as one unsharded run.

Shards are refused, naming what differs or is missing, when they were made with other
models, settings, data or prompts (chat template, system instruction), split another way,
or do not make a complete set.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

from . import SCORING_VERSION, __version__
from .reports import SCHEMA_VERSION, ReportError, evaluation_entry, load_report

# Settings that only say where a job writes or what it may skip: they never change a result.
JOB_ONLY_SETTINGS = frozenset({"report", "baseline", "update_baseline", "cache_dir", "no_cache", "chart",
                               "require_model", "allow_skip", "shard", "report_lm_eval", "sources"})


class MergeError(Exception):
    """The shards cannot be merged; the message says which and why."""


def union_by_nodeid(old: Iterable[dict[str, Any]], new: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Whole-test records of two parts: ``new``'s record of a test wins, nothing else is lost."""
    joined = {t["nodeid"]: t for t in old}
    joined.update((t["nodeid"], t) for t in new)
    return [joined[k] for k in sorted(joined)]


def result_settings(settings: Any) -> dict[str, Any]:
    """The settings of a run that can change a result (all but where outputs go): the report
    records them, and shards made with different ones are not merged."""
    from dataclasses import fields

    return {f.name: _plain(getattr(settings, f.name)) for f in fields(settings)
            if f.name not in JOB_ONLY_SETTINGS}


def _plain(value: Any) -> Any:
    return value if value is None or isinstance(value, (str, int, float, bool)) else str(value)


# -- shards ------------------------------------------------------------------------------------
def load_shards(paths: Sequence[str]) -> list[tuple[str, dict[str, Any]]]:
    """Read the shard reports; MergeError for a file that is not one."""
    named = []
    for path in paths:
        try:
            report = load_report(path)
        except ReportError as exc:
            raise MergeError(str(exc)) from None
        if not report.get("shard"):
            raise MergeError(f"{path}: not a shard report (it was not made with --mmlu-shard I/N)")
        named.append((path, report))
    if not named:
        raise MergeError("no shard reports given")
    return named


def _name(path: str, report: dict[str, Any]) -> str:
    return f"{path} (shard {report['shard']['index']}/{report['shard']['count']})"


def check_complete(named: Sequence[tuple[str, dict[str, Any]]]) -> None:
    """Every shard of one split, each once; the same model, settings and software."""
    counts = {r["shard"]["count"] for _, r in named}
    if len(counts) > 1:
        raise MergeError("shards of different splits: " + ", ".join(_name(p, r) for p, r in named))
    (count,) = counts
    seen: dict[int, str] = {}
    for path, report in named:
        index = report["shard"]["index"]
        if index in seen:
            raise MergeError(f"shard {index}/{count} given twice: {seen[index]} and {path}")
        seen[index] = path
    missing = [f"{i}/{count}" for i in range(1, count + 1) if i not in seen]
    if missing:
        have = ", ".join(f"{i}/{count} from {seen[i]}" for i in sorted(seen))
        raise MergeError(f"incomplete set of shards: missing {', '.join(missing)} (have {have})")
    first_path, first = named[0]
    for path, report in named[1:]:
        for key in ("scoring_version", "pytest_mmlu_version", "data"):
            if report.get(key) != first.get(key):
                raise MergeError(f"shards made with different {key.replace('_', ' ')}: "
                                 f"{first.get(key)!r} in {_name(first_path, first)}, "
                                 f"{report.get(key)!r} in {_name(path, report)}")
        a, b = first.get("settings") or {}, report.get("settings") or {}
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                what = "models" if key in ("model", "revision") else f"settings ({key})"
                raise MergeError(f"shards made with different {what}: {key} is {a.get(key)!r} in "
                                 f"{_name(first_path, first)}, {b.get(key)!r} in {_name(path, report)}")
        commits = {(m or {}).get("commit") for m in (first.get("model"), report.get("model"))}
        if None not in commits and len(commits) > 1:
            raise MergeError(f"shards made with different models: commit {first['model']['commit']} in "
                             f"{_name(first_path, first)}, {report['model']['commit']} in {_name(path, report)}")


def merge_shards(named: Sequence[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """One report of the whole from a complete set of shard reports (not judged yet)."""
    check_complete(named)
    named = sorted(named, key=lambda pr: pr[1]["shard"]["index"])
    nodeids = [{t["nodeid"] for t in r["tests"]} for _, r in named]
    every = set().union(*nodeids)
    for (path, report), have in zip(named, nodeids):
        lacking = sorted(every - have)
        if lacking:
            raise MergeError(f"{_name(path, report)} has no record of {', '.join(lacking)}: every shard "
                             f"must run the same tests (same files, -k and -m)")
    tests = []
    for nodeid in sorted(every):
        parts = [(path, report, next(t for t in report["tests"] if t["nodeid"] == nodeid))
                 for path, report in named]
        lengths = {len(t["evaluations"]) for _, _, t in parts}
        if len(lengths) > 1:
            raise MergeError(f"{nodeid}: the shards made different numbers of evaluations ("
                             + ", ".join(f"{len(t['evaluations'])} in {_name(p, r)}" for p, r, t in parts) + ")")
        evaluations = [_merge_evaluation(nodeid, [(_name(p, r), t["evaluations"][i]) for p, r, t in parts])
                       for i in range(lengths.pop())]
        outcomes = [t.get("outcome") for _, _, t in parts]
        tests.append({"nodeid": nodeid, "evaluations": evaluations, "shard_outcomes": outcomes,
                      "outcome": _outcome(outcomes)})
    first = named[0][1]
    loaded = [r["model"] for _, r in named if (r.get("model") or {}).get("loaded", True)]
    return {
        "schema": SCHEMA_VERSION, "pytest_mmlu_version": __version__, "scoring_version": SCORING_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": loaded[0] if loaded else first.get("model"), "data": first.get("data"),
        "settings": first.get("settings"), "shard": None,
        "merged_from": [{"path": p, "shard": r["shard"], "created": r.get("created")} for p, r in named],
        "tests": tests,
    }


def _outcome(outcomes: list[str | None]) -> str | None:
    for word in ("error", "failed"):
        if word in outcomes:
            return word
    return "skipped" if outcomes and all(o == "skipped" for o in outcomes) else "passed"


SAME_IN_EVERY_SHARD = ("subjects", "shots", "limit", "budget_bytes", "floor", "no_regression")


def _merge_evaluation(nodeid: str, parts: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    from .results import EvaluationResult

    (first_name, first), rest = parts[0], parts[1:]
    for name, ev in rest:
        for key in SAME_IN_EVERY_SHARD:
            if ev.get(key) != first.get(key):
                raise MergeError(f"{nodeid}: the shards evaluated different things: {key} is "
                                 f"{first.get(key)!r} in {first_name}, {ev.get(key)!r} in {name}")
    could_not_run = [(name, ev) for name, ev in parts if ev.get("accuracy") is None]
    if could_not_run:
        # An evaluation that could not run in some shard has no whole: its errors are the verdict.
        entry = dict(could_not_run[0][1])
        entry["breaches"] = [f"{line} (in {name})" for name, ev in could_not_run for line in ev["breaches"]]
        entry.pop("judged_at_merge", None)
        return entry
    for name, ev in rest:
        if ev.get("data_fingerprint") != first.get("data_fingerprint"):
            raise MergeError(f"{nodeid}: shards made on different data (fingerprint "
                             f"{first.get('data_fingerprint', '')[:12]} in {first_name}, "
                             f"{ev.get('data_fingerprint', '')[:12]} in {name})")
    _check_same_prompts(nodeid, [(name, ev) for name, ev in parts if ev.get("n")])
    expected = first.get("unsharded_n")
    order = {s: i for i, s in enumerate(first["subjects"])}
    questions, seen = [], set()
    for name, ev in parts:
        for q in ev["questions"]:
            key = (q["subject"], q["index"])
            if key in seen:
                raise MergeError(f"{nodeid}: question {q['subject']}#{q['index']} is in two shards "
                                 f"(again in {name}): the shards were not split the same way")
            seen.add(key)
            questions.append(q)
    if expected is not None and len(questions) != expected:
        raise MergeError(f"{nodeid}: the shards hold {len(questions)} of the evaluation's {expected} "
                         f"questions")
    questions.sort(key=lambda q: (order.get(q["subject"], len(order)), q["index"]))
    evs = [ev for _, ev in parts]
    ran = max(evs, key=lambda ev: ev["n"])  # a shard with none of its questions knows no device
    whole = EvaluationResult.from_dict({
        **ran, "questions": questions,
        "peak_memory_bytes": max(ev["peak_memory_bytes"] for ev in evs),
        "batch_size": max(ev["batch_size"] for ev in evs),
        "batch_sizes": [b for ev in evs for b in ev.get("batch_sizes", [])],
        "seconds": sum(ev["seconds"] for ev in evs), "tokens": sum(ev.get("tokens", 0) for ev in evs),
        "from_cache": all(ev.get("from_cache", False) for ev in evs),
        "engine_mode": "plain" if any(ev.get("engine_mode") == "plain" for ev in evs) else "prefix",
        "engine_mode_reason": next((ev.get("engine_mode_reason") for ev in evs
                                    if ev.get("engine_mode") == "plain"), None),
    })
    entry = whole.to_dict()
    entry.update({key: first.get(key) for key in ("floor", "no_regression")})
    entry["breaches"] = [line for _, ev in parts for line in ev.get("breaches", [])]
    entry["shards"] = [{"shard": name, "n": ev["n"], "peak_memory_bytes": ev["peak_memory_bytes"],
                        "batch_size": ev["batch_size"], "seconds": ev["seconds"]} for name, ev in parts]
    return entry


def _check_same_prompts(nodeid: str, ran: list[tuple[str, dict[str, Any]]]) -> None:
    """Shards whose questions were asked with other prompts (another chat template in a local
    model folder, say: the settings alone do not show it). A shard without questions of
    this evaluation rendered none and is not compared."""
    from .chat import format_difference

    for name, ev in ran[1:]:
        differs = format_difference(ran[0][1].get("prompt_format"), ev.get("prompt_format"), (ran[0][0], name))
        if differs:
            raise MergeError(f"{nodeid}: shards made with other prompts ({differs})")


# -- judging the whole ------------------------------------------------------------------------
def marks_of(entry: dict[str, Any]) -> Any:
    """The gates an evaluation entry declares, as the markers would give them."""
    from .markers import Floor, ItemMarks, NoRegression

    floor, rule = entry.get("floor"), entry.get("no_regression")
    return ItemMarks(
        budget_bytes=entry.get("budget_bytes"),
        floor=None if floor is None else Floor(floor.get("min"), dict(floor.get("per_subject") or {})),
        no_regression=None if rule is None else NoRegression(rule["max_drop"], rule["alpha"],
                                                             rule.get("against", "baseline")))


def judge_merged(report: dict[str, Any], baseline: Any) -> dict[str, Any]:
    """Every gate declared in the tests, judged again on the merged questions (in place)."""
    from . import gates
    from .results import EvaluationResult

    for test in report["tests"]:
        results = []
        for i, entry in enumerate(test["evaluations"]):
            if entry.get("accuracy") is None:
                continue  # could not run in some shard: its error lines stand
            result = EvaluationResult.from_dict(entry)
            marks = marks_of(entry)
            verdicts = gates.judge(test["nodeid"], result, marks, baseline)
            judged = evaluation_entry(result, marks, verdicts)
            judged["shards"] = entry.get("shards", [])
            test["evaluations"][i] = judged
            results.append(result)
        declared = marks_of(test["evaluations"][0]).floor if test["evaluations"] else None
        uncovered = gates.floor_uncovered(results, declared)
        if uncovered and test["evaluations"]:
            test["evaluations"][0]["breaches"].extend(v.line for v in uncovered)
        breached = any(e.get("breaches") for e in test["evaluations"])
        if breached and test.get("outcome") == "passed":
            test["outcome"] = "failed"
    return report
