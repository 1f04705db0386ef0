"""The same evaluation gives bit-identical log-likelihoods in fresh processes and within a
process, each within 1e-4 of the float64 truth.

Issue 9 reported, on another machine, that the first evaluation of about one process in three
to six drifted by up to 3.2e-3 on this very setup (a tiny random qwen2 with SmolLM2's tokenizer,
5-shot abstract_algebra + high_school_us_history, limit 5: rows of 2,000+ tokens, the few-shot
prefix in several chunks); on this project's machines it has not reproduced (over 60
processes). Each process here evaluates twice, so a first evaluation unlike the later ones
fails, and every run is a new interpreter, so nothing lazily initialised is shared.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from factories import LONG_ARCH_CONFIGS, real_mmlu_zip
from truth import truth_loglikelihoods

pytestmark = pytest.mark.slow

SUBJECTS = ["abstract_algebra", "high_school_us_history"]
LIMIT = 5
PROCESSES = 4
RUN = """
import json, sys
from pytest_mmlu.mmlu.data import MmluData
from pytest_mmlu.mmlu.evaluation import Evaluator
from pytest_mmlu.models.load import load_model
from pytest_mmlu.marks import make_eval_spec
from pytest_mmlu.settings import Settings
model, data, subjects, limit = sys.argv[1], sys.argv[2], sys.argv[3].split(","), int(sys.argv[4])
evaluator = Evaluator(load_model(Settings(model=model)), MmluData(data))
runs = [evaluator.evaluate(make_eval_spec(subjects, 5, limit)) for _ in range(2)]
print(json.dumps([{"lls": [ll.hex() for q in r.questions for ll in q.loglikelihoods],
                   "batches": r.batch_sizes, "mode": r.engine_mode} for r in runs]))
"""


def fresh_process(model: Path, env: dict[str, str]) -> list[dict]:
    """Two evaluations of the spec in a new interpreter."""
    done = subprocess.run(
        [sys.executable, "-c", RUN, str(model), str(real_mmlu_zip()), ",".join(SUBJECTS), str(LIMIT)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def qwen2_with_smollm2_tokenizer(smollm2_dir, tmp_path_factory):  # noqa: F811
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder = tmp_path_factory.mktemp("repeat") / "qwen2"
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    config = AutoConfig.for_model("qwen2", vocab_size=len(tokenizer), **LONG_ARCH_CONFIGS["qwen2"])
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config, dtype=torch.float32).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("capability", [None, "default"])
def test_fresh_processes_give_bit_identical_scores_at_the_truth(capability, qwen2_with_smollm2_tokenizer):
    model = qwen2_with_smollm2_tokenizer
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    if capability:
        env["ATEN_CPU_CAPABILITY"] = capability
    runs = [run for _ in range(PROCESSES) for run in fresh_process(model, env)]
    assert runs[0]["mode"] == "prefix"
    assert all(run == runs[0] for run in runs[1:]), "evaluations disagree (first vs later, or between processes)"

    from pytest_mmlu.marks import make_eval_spec
    from pytest_mmlu.mmlu.data import MmluData
    from pytest_mmlu.mmlu.evaluation import Evaluator
    from pytest_mmlu.models.load import load_model
    from pytest_mmlu.settings import Settings

    evaluator = Evaluator(load_model(Settings(model=str(model))), MmluData(str(real_mmlu_zip())))
    requests, _ = evaluator.requests(make_eval_spec(SUBJECTS, 5, LIMIT))
    assert max(len(r.context) for r in requests) >= 2000
    truth = truth_loglikelihoods(evaluator.loaded.model, requests, evaluator.max_length)
    got = [float.fromhex(h) for h in runs[0]["lls"]]
    assert max(abs(a - b) for a, b in zip(got, truth)) <= 1e-4
