"""``pytest-mmlu`` command line: ``lm-eval`` (lm-eval's CLI with our model registered)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: pytest-mmlu lm-eval [lm-eval arguments...]\n\n"
              "  lm-eval   run lm-eval's command line with --model pytest-mmlu available")
        return 0
    command, rest = argv[0], argv[1:]
    if command == "lm-eval":
        from . import lm_eval_adapter  # noqa: F401 - registers the model
        from lm_eval.__main__ import cli_evaluate

        sys.argv = ["lm_eval", *rest]
        cli_evaluate()
        return 0
    print(f"pytest-mmlu: unknown command {command!r} (try --help)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
