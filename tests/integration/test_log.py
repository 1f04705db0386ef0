"""A log people read: a summary within 100 columns, progress as one updating line on a terminal
and plain lines (no repeated file names) in CI logs."""

from __future__ import annotations

import io
import re

from pytest_mmlu.outputs import progress as progress_module
from pytest_mmlu.outputs.progress import Progress
from pytest_mmlu.outputs.summary import WIDTH, summary_lines

ALL_57 = ",".join(f"subject_number_{i}" for i in range(57))


def entry(label, n=1200, breaches=(), **extra):
    return {
        "subjects": label.split(","),
        "label": label,
        "shots": 5,
        "limit": None,
        "n": n,
        "accuracy": 0.5123,
        "ci95": [0.48, 0.54],
        "floor": {"min": 0.45, "per_subject": {"a": 0.5}},
        "peak_memory_bytes": 12 * 2**30,
        "budget_bytes": 80 * 2**30,
        "batch_size": 512,
        "seconds": 1234.5,
        "breaches": list(breaches),
        **extra,
    }


def test_the_summary_fits_100_columns_with_long_ids_subjects_and_breaches():
    long_id = "tests/release/" + "very_long_folder_name/" * 4 + "test_gate.py::test_" + "x" * 80
    records = [
        {
            "nodeid": long_id,
            "evaluations": [
                entry(
                    ALL_57,
                    breaches=["MMLU accuracy 0.512 < floor 0.550 (n=1200, 95% CI 0.480-0.540; 5-shot, " + ALL_57 + ")"],
                )
            ],
        },
        {
            "nodeid": "test_gate.py::test_short",
            "evaluations": [
                entry(
                    "anatomy",
                    n=60,
                    regression={
                        "verdict": "unchanged",
                        "line": None,
                        "base_accuracy": 0.6,
                        "new_accuracy": 0.583,
                        "n": 60,
                        "lost": 4,
                        "gained": 3,
                        "detectable_drop": 0.1095,
                        "power": 0.8,
                        "alpha": 0.05,
                        "max_drop": 0.02,
                        "discordance": 0.117,
                        "too_small": True,
                    },
                )
            ],
        },
    ]
    lines = summary_lines(records)
    assert all(len(line) <= WIDTH for line in lines), max(lines, key=len)
    text = "\n".join(lines)
    assert "subject_number_0…+56" in text or re.search(r"subject_number_\d*…?\+56", text)
    cut = [ln for ln in lines if ln.startswith("tests/release/") and "…" in ln]
    assert cut and cut[0].endswith("x" * 40)  # the long id, cut in the middle: file and test kept
    # The breach is there in full (wrapped), every subject of it.
    assert ALL_57 in "".join(ln.strip() for ln in lines if ln.startswith(("BREACH", "    ")))
    assert (
        "detects drops >= 0.110 at 80% power (n=60, alpha 0.05, discordance 0.12); TOO SMALL for its "
        "max_drop 0.020: add questions" in " ".join(" ".join(lines).split())
    )


class FakeWriter:
    def __init__(self, line):
        self._file = io.StringIO()
        self._current_line = line
        self.fullwidth = 80


class FakeReporter:
    isatty = True

    def __init__(self, line):
        self._tw = FakeWriter(line)


def shown(raw: str) -> str:
    """What a terminal shows on the current line after ``raw`` (carriage returns and erase-to-end)."""
    line = ""
    for part in re.split(r"(\r|\x1b\[K)", raw):
        if part == "\r":
            cursor = 0
        elif part == "\x1b[K":
            line = line[:cursor]
        elif part:
            line = line[:cursor] + part + line[cursor + len(part) :]
            cursor += len(part)
        if part == "\r":
            cursor = 0
    return line


def test_on_a_terminal_progress_is_one_line_redrawn_and_cleared(monkeypatch):
    monkeypatch.setattr(progress_module, "TERMINAL_EVERY_S", 0.0)
    reporter = FakeReporter("test_gate.py ..")
    progress = Progress(reporter, None, "test_gate.py::test_x")
    for done in (10, 20, 30):
        progress(done, 30)
        assert shown(reporter._tw._file.getvalue()).startswith(
            f"test_gate.py .. [mmlu] test_gate.py::test_x: {done}/30"
        )
    assert "\n" not in reporter._tw._file.getvalue()  # never a new line
    progress.close()
    assert shown(reporter._tw._file.getvalue()) == "test_gate.py .."  # as pytest left it


SLOW_SUITE = """
import pytest

@pytest.mark.mmlu(subjects=["anatomy", "virology"], shots=1, limit=6)
def test_first(mmlu_result):
    pass

@pytest.mark.mmlu(subjects="marketing", shots=0, limit=6)
def test_second(mmlu_result):
    pass
"""


def test_in_a_ci_log_progress_is_plain_lines_and_the_file_name_is_not_repeated(
    pytester, tiny_model_dir, mmlu_csv_dir, monkeypatch
):
    monkeypatch.setattr(progress_module, "PLAIN_EVERY_S", 0.0)  # a line per batch, as a long evaluation gets
    pytester.makepyfile(test_gate=SLOW_SUITE)
    result = pytester.runpytest_inprocess(
        "--mmlu-model",
        str(tiny_model_dir),
        "--mmlu-data",
        str(mmlu_csv_dir),
        "-p",
        "no:cacheprovider",
        "--mmlu-no-cache",
        "--mmlu-batch-size",
        "2",
    )
    result.assert_outcomes(passed=2)
    lines = result.stdout.lines
    progress = [i for i, ln in enumerate(lines) if ln.startswith("[mmlu] ")]
    assert len(progress) >= 4, "\n".join(lines)
    assert any(
        re.fullmatch(r"\[mmlu\] .*test_gate\.py::test_first: 12/12 questions, .* q/s", lines[i]) for i in progress
    )
    # No empty line between progress lines; the file name is printed once, by pytest.
    first, last = progress[0], progress[-1]
    assert all(ln.strip() for ln in lines[first : last + 1]), "\n".join(lines[first : last + 1])
    assert sum(ln.startswith("test_gate.py") for ln in lines) == 1, "\n".join(lines)
