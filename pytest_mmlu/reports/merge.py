"""CI shards joined: ``--mmlu-shard I/N`` reports become one report of the whole, judged by
the one judge (``judge.judge_record``) exactly as one unsharded run is.

Every shard ran every test on its own questions, so a test's records are joined evaluation
by evaluation, question by question (:func:`merge_shards`), and every gate the tests
declared is judged again on the whole (:func:`judge_merged`).

Shards are refused, naming what differs or is missing, when they were made with other
settings or software, split another way, given twice, do not make a complete set, ran other
tests, declared other gates, or when an evaluation's shards are not of the same evaluation
(``identity.MERGE``: the model's content, the variant, dtype, device kind, prompts, data,
shots, scoring version, library versions). A test whose shards made different evaluations
(it failed before evaluating in some) keeps no evaluation, and its gates fail as declared,
never evaluated.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..identity import MERGE, difference, of_entry, with_questions
from ..judge import apply, judge_record, record_failing
from ..mmlu.results import EvaluationResult
from ..records import is_reference
from .report import ReportError, joined_model_info, load_report, report_header


class MergeError(Exception):
    """The shards cannot be merged; the message says which and why."""


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
    """Every shard of one split, each once; the same settings and software."""
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
                raise MergeError(
                    f"shards made with different {key.replace('_', ' ')}: "
                    f"{first.get(key)!r} in {_name(first_path, first)}, "
                    f"{report.get(key)!r} in {_name(path, report)}"
                )
        a, b = first.get("settings") or {}, report.get("settings") or {}
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                what = "models" if key in ("model", "revision") else f"settings ({key})"
                raise MergeError(
                    f"shards made with different {what}: {key} is {a.get(key)!r} in "
                    f"{_name(first_path, first)}, {b.get(key)!r} in {_name(path, report)}"
                )


def merge_shards(named: Sequence[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """One report of the whole from a complete set of shard reports (not judged yet)."""
    check_complete(named)
    named = sorted(named, key=lambda pr: pr[1]["shard"]["index"])
    nodeids = [{t["nodeid"] for t in r["tests"]} for _, r in named]
    every = set().union(*nodeids)
    for (path, report), have in zip(named, nodeids):
        lacking = sorted(every - have)
        if lacking:
            raise MergeError(
                f"{_name(path, report)} has no record of {', '.join(lacking)}: every shard "
                f"must run the same tests (same files, -k and -m)"
            )
    tests = []
    for nodeid in sorted(every):
        parts = [
            (_name(path, report), next(t for t in report["tests"] if t["nodeid"] == nodeid)) for path, report in named
        ]
        tests.append(_merge_test(nodeid, parts))
    first = named[0][1]
    loaded = [r["model"] for _, r in named if (r.get("model") or {}).get("loaded", True)]
    model = None
    for part in loaded:
        model = joined_model_info(model, part)
    return {
        **report_header(),
        "model": model or first.get("model"),
        "data": first.get("data"),
        "settings": first.get("settings"),
        "shard": None,
        "merged_from": [{"path": p, "shard": r["shard"], "created": r.get("created")} for p, r in named],
        "tests": tests,
    }


def _merge_test(nodeid: str, parts: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    (first_name, first), rest = parts[0], parts[1:]
    for name, test in rest:
        if test.get("gates") != first.get("gates"):
            raise MergeError(
                f"{nodeid}: the shards declared other gates ({first_name}: {first.get('gates')}; "
                f"{name}: {test.get('gates')}): every shard must run the same test code"
            )
    outcomes = [t.get("outcome") for _, t in parts]
    merged: dict[str, Any] = {
        "nodeid": nodeid,
        "outcome": _outcome(outcomes),
        "shard_outcomes": outcomes,
        "gates": first.get("gates"),
        "evaluations": [],
    }
    if any(t.get("strict_xfail") for _, t in parts):
        merged["strict_xfail"] = True
    if any(t.get("xfail_excuses_gates") is False for _, t in parts):
        merged["xfail_excuses_gates"] = False
    lengths = [len(t["evaluations"]) for _, t in parts]
    if len(set(lengths)) > 1:
        # Some shard stopped before an evaluation (it failed, errored, skipped or crashed there):
        # there is no whole to judge, and the gates fail as never evaluated, saying why.
        merged["cause"] = (
            "the shards made different evaluations ("
            + ", ".join(
                f"{n} in {name}, which {outcome or 'did not finish'}"
                for (name, _), n, outcome in zip(parts, lengths, outcomes)
            )
            + ")"
        )
        return merged
    merged["evaluations"] = [
        _merge_evaluation(nodeid, [(name, t["evaluations"][i]) for name, t in parts]) for i in range(lengths[0])
    ]
    return merged


SEVERITY = ("crashed", "error", "failed", "not run")  # gates.OUTCOME_CAUSES, worst first


def _outcome(outcomes: list[str | None]) -> str:
    for word in SEVERITY:
        if word in outcomes:
            return word
    for word in ("skipped", "xfailed"):
        if outcomes and all(o == word for o in outcomes):
            return word
    return "xpassed" if "xpassed" in outcomes or "xfailed" in outcomes else "passed"


SAME_IN_EVERY_SHARD = ("subjects", "shots", "limit", "budget_bytes", "role", "variant")


def _merge_evaluation(nodeid: str, parts: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    (first_name, first), rest = parts[0], parts[1:]
    could_not_run = [(name, ev) for name, ev in parts if ev.get("accuracy") is None]
    if could_not_run:
        # An evaluation that could not run in some shard has no whole: its errors are the verdict
        # (what it would have been, a task's tasks or its variant, is not known where it failed).
        entry = {k: v for k, v in could_not_run[0][1].items() if k not in ("shard", "judged_at_merge")}
        entry["verdicts"] = [
            {"kind": v["kind"], "line": f"{v['line']} (in {name})"}
            for name, ev in could_not_run
            for v in _stored_verdicts(ev)
        ]
        entry["breaches"] = [v["line"] for v in entry["verdicts"]]
        return entry
    for name, ev in rest:
        for key in SAME_IN_EVERY_SHARD:
            if ev.get(key) != first.get(key):
                raise MergeError(
                    f"{nodeid}: the shards evaluated different things: {key} is "
                    f"{first.get(key)!r} in {first_name}, {ev.get(key)!r} in {name}"
                )
    for name, ev in rest:
        differs = difference(of_entry(first), of_entry(ev), MERGE, (first_name, name))
        if differs is not None:
            raise MergeError(f"{nodeid}: shards made with {differs.phrase}")
    expected = first.get("unsharded_n")
    order = {s: i for i, s in enumerate(first["subjects"])}
    questions: list[dict[str, Any]] = []
    seen: set[tuple[str, int]] = set()
    for name, ev in parts:
        for q in ev["questions"]:
            question = (q["subject"], q["index"])
            if question in seen:
                raise MergeError(
                    f"{nodeid}: question {q['subject']}#{q['index']} is in two shards "
                    f"(again in {name}): the shards were not split the same way"
                )
            seen.add(question)
            questions.append(q)
    if expected is not None and len(questions) != expected:
        raise MergeError(f"{nodeid}: the shards hold {len(questions)} of the evaluation's {expected} questions")
    questions.sort(key=lambda q: (order.get(q["subject"], len(order)), q["index"]))
    evs = [ev for _, ev in parts]
    ran = max(evs, key=lambda ev: ev["n"])  # a shard with none of its questions knows no device
    whole = EvaluationResult.from_dict(
        {
            **ran,
            "questions": questions,
            "peak_memory_bytes": max(ev["peak_memory_bytes"] for ev in evs),
            "batch_size": max(ev["batch_size"] for ev in evs),
            "batch_sizes": [b for ev in evs for b in ev.get("batch_sizes", [])],
            "seconds": sum(ev["seconds"] for ev in evs),
            "tokens": sum(ev.get("tokens", 0) for ev in evs),
            "from_cache": all(ev.get("from_cache", False) for ev in evs),
            "engine_mode": "plain" if any(ev.get("engine_mode") == "plain" for ev in evs) else "prefix",
            "engine_mode_reason": next(
                (ev.get("engine_mode_reason") for ev in evs if ev.get("engine_mode") == "plain"), None
            ),
            "identity": with_questions(of_entry(first), seen),
        }
    )
    entry = whole.to_dict()
    if is_reference(first):
        entry["role"] = first["role"]
    entry["shards"] = [
        {
            "shard": name,
            "n": ev["n"],
            "peak_memory_bytes": ev["peak_memory_bytes"],
            "batch_size": ev["batch_size"],
            "seconds": ev["seconds"],
        }
        for name, ev in parts
    ]
    return entry


def _stored_verdicts(ev: dict[str, Any]) -> list[dict[str, Any]]:
    return list(ev.get("verdicts") or [{"kind": "error", "line": line} for line in ev.get("breaches", [])])


def judge_merged(report: dict[str, Any], baseline: Any) -> dict[str, Any]:
    """Every gate declared in the tests, judged by the one judge on the merged whole."""
    report["tests"] = [apply(test, judge_record(test, baseline)) for test in report["tests"]]
    for test in report["tests"]:
        if record_failing(test) and test.get("outcome") in ("passed", "xpassed", "xfailed"):
            # as the unsharded run's test fails on its gate (an expected failure, if marked xfail
            # with no raises= that leaves a gate's failure out; never a pytest.xfail() in the body,
            # which the unsharded run's gate failure comes before)
            excused = test["outcome"] != "passed" and test.get("xfail_excuses_gates", True)
            test["outcome"] = "xfailed" if excused else "failed"
        elif test.get("strict_xfail") and test.get("outcome") == "xpassed":
            test["outcome"] = "failed"  # its gates held on the whole: a strict xfail that passed
    return report
