"""``pytest-mmlu`` command line.

- ``pytest-mmlu compare OLD.json NEW.json [--max-drop 0.02] [--alpha 0.05]``: every gate NEW's
  tests declared, judged with OLD as the baseline (the run's own judge), plus the McNemar
  verdict and per-subject diff of every evaluation the two share (``--max-drop``/``--alpha``
  where a test declares no no-regression gate). Exit status 1 on a breach or a failed test,
  2 when nothing was comparable or judged (or a report cannot be read).
- ``pytest-mmlu merge SHARD.json... [-o MERGED.json] [--baseline PATH]``: join the reports of
  ``--mmlu-shard I/N`` runs, judge every declared gate on the whole, print the summary (and
  append it to ``$GITHUB_STEP_SUMMARY``). Exit status 1 on a breach or a failed test, 2 when
  the shards cannot be merged (the line says what differs or is missing).
- ``pytest-mmlu lm-eval ARGS...``: lm-eval's command line with ``--model pytest-mmlu``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from .compare import EXPECTED_FAILURES, FAILED_OUTCOMES, compare_reports, heading
from .judge import record_failing
from .markers import NoRegression
from .outputs.github import github_summary
from .outputs.summary import improved_lines, summary_lines, wrapped
from .records import regression_details
from .reports.baseline import Baseline, load_baseline
from .reports.lm_eval_write import report_tokenizer, write_lm_eval
from .reports.merge import MergeError, judge_merged, load_shards, merge_shards
from .reports.report import ReportError, load_report, write_json_atomic
from .tasks.registry import TaskError
from .tasks.runs import TaskRuns
from .text import table


def compare(old_path: str, new_path: str, max_drop: float, alpha: float) -> int:
    """Judge every gate NEW's tests declared, OLD as their baseline, with the one judge; compare
    every other evaluation the two share under ``--max-drop``/``--alpha`` (``compare.py``)."""

    try:
        old, new = load_report(old_path), load_report(new_path)
    except ReportError as exc:
        print(f"pytest-mmlu compare: {exc}", file=sys.stderr)
        return 2
    if new.get("shard"):
        print(
            f"pytest-mmlu compare: {new_path} is shard {new['shard']['index']}/{new['shard']['count']}: "
            f"compare the merged report (pytest-mmlu merge)",
            file=sys.stderr,
        )
        return 2
    result = compare_reports(old, new, old_path, NoRegression(max_drop, alpha))
    for test in result.tests:
        for ev in test.evaluations:
            print(f"\n{heading(test.nodeid, ev)}")
            for c in regression_details(ev, compared=True):
                _print_comparison(ev, c)
            if not regression_details(ev, compared=True) and ev.get("n") and not ev.get("breaches"):
                print(f"  not compared: {old_path} has no evaluation of this test, subjects, shots and limit")
            for line in ev.get("breaches", []):
                print(f"  BREACH {line}")
        if test.breaches:
            print(f"\n{test.nodeid}")
            for line in test.breaches:
                print(f"  BREACH {line}")
    for nodeid, subjects, shots, limit in result.old_only:
        print(f"\nonly in {old_path}: {nodeid} ({','.join(subjects)}, {shots}-shot, limit {limit})")
    if result.tests:  # one line per test: what the judge concluded
        print("\nverdicts:")
        for test in result.tests:
            which = f" ({', '.join(test.kinds)})" if test.kinds else ""
            print(f"  {test.nodeid}: {test.status}{which}")
    if not result.judged:
        # No verdict is not a pass: a script checking the exit status must not read "no regression".
        print(
            f"pytest-mmlu compare: nothing comparable: no evaluation of {new_path} matches one of "
            f"{old_path} (same test, subjects, shots, limit, data and questions), and no gate of it "
            f"was judged",
            file=sys.stderr,
        )
        return 2
    return 1 if result.failed else 0


def _print_comparison(ev: dict[str, Any], c: dict[str, Any]) -> None:
    rows = []
    for subject, acc in sorted(ev["per_subject"].items()):
        before = (c.get("base_per_subject") or {}).get(subject)
        rows.append(
            [
                subject,
                str(acc["n"]),
                "-" if before is None else f"{before:.3f}",
                f"{acc['accuracy']:.3f}",
                "-" if before is None else f"{acc['accuracy'] - before:+.3f}",
            ]
        )
    print("\n".join("  " + ln for ln in table(["subject", "n", "old", "new", "delta"], rows)))
    word = {"regressed": "REGRESSED", "improved": "IMPROVED", "unchanged": "no significant change"}
    against = "full precision" if c.get("against") == "full" else "baseline"
    print(
        f"  overall vs {against} {c['base_accuracy']:.3f} -> {c['new_accuracy']:.3f} (n={c['n']}; "
        f"{c['lost']} lost, {c['gained']} gained; {c.get('test', 'McNemar')} p(worse)={c['p_worse']:.4f}, "
        f"p(better)={c['p_better']:.4f}): {word[c['verdict']]}"
    )


def merge(
    paths: list[str],
    output: str | None,
    baseline_path: str | None,
    data: str | None = None,
    lm_eval_dir: str | None = None,
) -> int:

    try:
        if output and baseline_path and os.path.realpath(output) == os.path.realpath(baseline_path):
            raise MergeError(
                f"-o {output} is the --baseline file: the merged report would replace the "
                f"baseline it is judged against; write it elsewhere"
            )
        merged = merge_shards(load_shards(paths))
        baseline = _merge_baseline(baseline_path, data or merged.get("data"), merged)
    except (MergeError, ReportError) as exc:
        print(f"pytest-mmlu merge: {exc}", file=sys.stderr)
        return 2
    judge_merged(merged, baseline)
    records = merged["tests"]
    if not records:  # every MMLU test deselected, say: no verdict is not a pass
        print("pytest-mmlu merge: the shards hold no MMLU test: nothing was judged", file=sys.stderr)
        return 2
    print("MMLU summary (merged shards; memory in GiB)")
    for line in summary_lines(records):
        print(line)
    notes = [f"NOTE {line}" for line in improved_lines(records)]
    failed = [r["nodeid"] for r in records if r.get("outcome") in FAILED_OUTCOMES]
    notes.extend(
        f"FAILED in a shard: {nodeid}"
        for nodeid in failed
        if not any(record_failing(r) for r in records if r["nodeid"] == nodeid)
    )
    written = True
    if output:
        try:
            write_json_atomic(output, merged)
            notes.append(f"pytest-mmlu merge: {len(paths)} shards merged into {output}")
        except OSError as exc:
            notes.append(f"pytest-mmlu merge: report NOT written to {output}: {exc.strerror or exc}")
            written = False
    if lm_eval_dir:
        try:
            written_files = write_lm_eval(
                lm_eval_dir, merged, data or merged.get("data"), prepare=_task_preparer(merged)
            )
            notes.append(f"pytest-mmlu merge: lm-eval results written under {lm_eval_dir} ({len(written_files)} files)")
        except (OSError, ReportError, TaskError) as exc:
            notes.append(f"pytest-mmlu merge: lm-eval results NOT written to {lm_eval_dir}: {exc}")
            written = False
    summary_path = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary_path:
        try:
            with open(summary_path, "a") as f:
                f.write(github_summary(records))
        except OSError as exc:
            notes.append(f"pytest-mmlu merge: GitHub step summary NOT written to {summary_path}: {exc}")
    for note in notes:
        for line in wrapped(note):
            print(line)
    breached = any(record_failing(r) for r in records if r.get("outcome") not in EXPECTED_FAILURES)
    return 1 if breached or failed or not written else 0


def _merge_baseline(path: str | None, data: str | None, merged: dict[str, Any]) -> Any:
    """The baseline the merged whole is compared with: a pytest-mmlu report or lm-eval files
    (their chat prompts rendered with the merged report's model's tokenizer where needed)."""

    if not path:
        return Baseline(None, None)

    if not Path(path).exists():
        return Baseline(None, path)

    return load_baseline(path, data, lambda: report_tokenizer(merged), _task_preparer(merged))


def _task_preparer(merged: dict[str, Any]) -> Any:
    """A task evaluation's lm-eval tasks, loaded as the shards loaded them (their include folder)."""
    runs = TaskRuns((merged.get("settings") or {}).get("include_path"), lambda: None, None, False)
    return runs.for_entry


def _fraction(name: str, low_open: bool = False) -> Any:
    """An argparse type: a number in [0, 1] (or (0, 1)), as the marker checks it."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number, got {text!r}") from None
        if not (0 < value < 1 if low_open else 0 <= value <= 1):
            raise argparse.ArgumentTypeError(
                f"{name} must be {'strictly between 0 and 1' if low_open else 'in [0, 1]'}, got {text}"
            )
        return value

    return parse


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["lm-eval"]:
        from lm_eval.__main__ import cli_evaluate

        from . import lm_eval_adapter  # noqa: F401 - registers --model pytest-mmlu

        sys.argv = ["lm_eval", *argv[1:]]
        cli_evaluate()
        return 0
    parser = argparse.ArgumentParser(prog="pytest-mmlu", description="pytest-mmlu tools")
    sub = parser.add_subparsers(dest="command", required=True)
    cmp_parser = sub.add_parser("compare", help="compare two JSON reports question by question")
    cmp_parser.add_argument("old")
    cmp_parser.add_argument("new")
    cmp_parser.add_argument("--max-drop", type=_fraction("--max-drop"), default=NoRegression.max_drop)
    cmp_parser.add_argument("--alpha", type=_fraction("--alpha", low_open=True), default=NoRegression.alpha)
    merge_parser = sub.add_parser("merge", help="join --mmlu-shard reports and judge the whole")
    merge_parser.add_argument("shards", nargs="+", metavar="SHARD.json")
    merge_parser.add_argument("-o", "--output", metavar="MERGED.json", help="write the merged report")
    merge_parser.add_argument(
        "--baseline",
        metavar="PATH",
        help="the baseline of the tests' mmlu_no_regression gates (a report, or lm-eval --log_samples output)",
    )
    merge_parser.add_argument(
        "--data",
        metavar="SOURCE",
        help="the MMLU source, to check an lm-eval baseline's questions (default: the one the shards used)",
    )
    merge_parser.add_argument(
        "--lm-eval", metavar="DIR", dest="lm_eval_dir", help="also write the merged results as lm-eval output under DIR"
    )
    sub.add_parser("lm-eval", help="run lm-eval's CLI with --model pytest-mmlu available")
    args = parser.parse_args(argv)
    if args.command == "merge":
        return merge(args.shards, args.output, args.baseline, args.data, args.lm_eval_dir)
    return compare(args.old, args.new, args.max_drop, args.alpha)


if __name__ == "__main__":
    sys.exit(main())
