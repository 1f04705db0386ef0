"""``pytest-mmlu`` command line.

- ``pytest-mmlu compare OLD.json NEW.json [--max-drop 0.02] [--alpha 0.05]``: per-subject
  accuracy diff and the McNemar verdict of every evaluation the two reports share. Exit
  status 1 on a regression, 2 when nothing was comparable (or a report cannot be read).
- ``pytest-mmlu lm-eval ARGS...``: lm-eval's command line with ``--model pytest-mmlu``.
"""

from __future__ import annotations

import argparse
import sys

from .reports import ReportError, format_table, load_report


def compare(old_path: str, new_path: str, max_drop: float, alpha: float) -> int:
    from .baseline import Baseline, evaluation_key
    from .gates import describe, regression
    from .markers import NoRegression

    try:
        old, new = load_report(old_path), load_report(new_path)
    except ReportError as exc:
        print(f"pytest-mmlu compare: {exc}", file=sys.stderr)
        return 2
    baseline = Baseline(old, old_path)
    rule = NoRegression(max_drop, alpha)
    old_keys = {evaluation_key(t["nodeid"], e) for t in old["tests"] for e in t["evaluations"] if e.get("n")}
    regressed = compared = 0
    for test in new["tests"]:
        for ev in test["evaluations"]:
            if not ev.get("n"):
                continue
            key = evaluation_key(test["nodeid"], ev)
            print(f"\n{test['nodeid']} ({describe(ev)})")
            verdict = regression(test["nodeid"], ev, rule, baseline)
            if verdict.kind == "missing-baseline":
                print(f"  not comparable: {verdict.line}")
                continue
            old_keys.discard(key)
            compared += 1
            c = verdict.detail
            rows = []
            for subject, acc in sorted(ev["per_subject"].items()):
                before = c["base_per_subject"].get(subject)
                rows.append([subject, str(acc["n"]), "-" if before is None else f"{before:.3f}",
                             f"{acc['accuracy']:.3f}",
                             "-" if before is None else f"{acc['accuracy'] - before:+.3f}"])
            print("\n".join("  " + ln for ln in format_table(["subject", "n", "old", "new", "delta"], rows)))
            word = {"regression": "REGRESSED", "improved": "IMPROVED", "unchanged": "no significant change"}
            print(f"  overall {c['base_accuracy']:.3f} -> {c['new_accuracy']:.3f} (n={c['n']}; {c['lost']} lost, "
                  f"{c['gained']} gained; McNemar p(worse)={c['p_worse']:.4f}, p(better)={c['p_better']:.4f}): "
                  f"{word[verdict.kind]}")
            regressed += verdict.kind == "regression"
    for nodeid, subjects, shots, limit in sorted(old_keys):
        print(f"\nonly in {old_path}: {nodeid} ({','.join(subjects)}, {shots}-shot, limit {limit})")
    if not compared:
        # No verdict is not a pass: a script checking the exit status must not read "no regression".
        print(f"pytest-mmlu compare: nothing comparable: no evaluation of {new_path} matches one of "
              f"{old_path} (same test, subjects, shots, limit, data and questions)", file=sys.stderr)
        return 2
    return 1 if regressed else 0


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
    cmp_parser.add_argument("--max-drop", type=float, default=0.02)
    cmp_parser.add_argument("--alpha", type=float, default=0.05)
    sub.add_parser("lm-eval", help="run lm-eval's CLI with --model pytest-mmlu available")
    args = parser.parse_args(argv)
    return compare(args.old, args.new, args.max_drop, args.alpha)


if __name__ == "__main__":
    sys.exit(main())
