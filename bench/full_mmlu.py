"""All of MMLU 5-shot (57 subjects, 14,042 questions) through pytest, one command:

    python bench/full_mmlu.py

A two-layer tiny llama with SmolLM2-135M-Instruct's tokenizer (49,152 tokens; built once by
``tests/factories.py`` under ~/.cache/pytest-mmlu/bench/) is gated by a test file with
``@pytest.mark.mmlu(subjects="all", shots=5)``, in a fresh ``pytest`` process (result
cache off). Prints pytest's wall time, the evaluation's seconds (building the requests and
the engine) and its peak memory, as the summary and the JSON report give them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from w5_bench import data_path, model_path  # noqa: E402

MODEL = Path.home() / ".cache" / "pytest-mmlu" / "bench" / "tiny-llama-smollm2-tokenizer"
TEST = """import pytest


@pytest.mark.mmlu(subjects="all", shots=5)
def test_all_of_mmlu_5_shot(mmlu_result):
    assert mmlu_result.n == 14042
"""


def main() -> int:
    data = data_path()
    if not (MODEL / "config.json").is_file():
        sys.path.insert(0, str(ROOT / "tests"))
        from factories import save_long_arch_model

        save_long_arch_model(MODEL, "llama", model_path())
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "test_full_mmlu.py").write_text(TEST)
        report = Path(tmp) / "report.json"
        command = [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--mmlu-no-cache",
            f"--mmlu-model={MODEL}",
            f"--mmlu-data={data}",
            f"--mmlu-report={report}",
            "test_full_mmlu.py",
        ]
        start = time.perf_counter()
        done = subprocess.run(command, cwd=tmp, capture_output=True, text=True)
        wall = time.perf_counter() - start
        print(done.stdout[-3000:], done.stderr[-2000:] if done.returncode else "", sep="\n")
        if done.returncode:
            return done.returncode
        (test,) = json.loads(report.read_text())["tests"]
        (evaluation,) = test["evaluations"]
    print(
        f"pytest wall {wall:.1f} s; evaluation {evaluation['seconds']:.1f} s (requests + engine), "
        f"n={evaluation['n']}, peak {evaluation['peak_memory_bytes'] / 2**30:.2f} GiB, "
        f"batches {len(evaluation['batch_sizes'])}, tokens run {evaluation['tokens']:,}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
