"""The prepared GPU command (bench/gpu_check.sh) cannot run in CI; its logic can, on CPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from factories import ROOT, real_mmlu_zip

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("script", ["bench/gpu_check.sh", "bench/gpu_prepare.sh"])
def test_the_gpu_scripts_parse(script):
    assert subprocess.run(["bash", "-n", str(ROOT / script)]).returncode == 0


def test_the_big_model_check_runs_end_to_end_on_cpu_in_smoke_mode(tmp_path, monkeypatch):
    """The 7B-shaped check's code path (model on the device, our engine under a budget, lm-eval
    at a batch size, one results file) with a 2-layer model of the same vocabulary on CPU."""
    out = tmp_path / "results.jsonl"
    env = {
        "GPU_CHECK_OUT": str(out),
        "PYTEST_MMLU_REAL_DATA": str(real_mmlu_zip()),
        "PATH": "/usr/bin:/bin",
        "HOME": str(Path.home()),
    }
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_check.py"), "big", "--smoke"],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    sections = [json.loads(line) for line in out.read_text().splitlines()]
    by_name = {s["section"]: s for s in sections}
    assert list(by_name) == ["machine", "big_model", "big_engine", "big_lm_eval", "big_summary"]
    assert by_name["big_engine"]["questions"] == 6 and by_name["big_engine"]["peak_gib"] <= 2
    assert by_name["big_summary"]["lm_eval_largest_batch_within_budget"] == 1


def test_w5_model_for_the_gpu_is_the_source_shape_with_random_weights(tmp_path, tiny_model_dir):
    from transformers import AutoConfig

    out = tmp_path / "random"
    env = {"GPU_CHECK_OUT": str(tmp_path / "r.jsonl"), "PATH": "/usr/bin:/bin", "HOME": str(Path.home())}
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_check.py"), "random-smollm2", str(tiny_model_dir), str(out)],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]

    def shape(folder):
        return {
            k: v for k, v in AutoConfig.from_pretrained(folder).to_dict().items() if k not in ("_name_or_path", "dtype")
        }

    assert shape(out) == shape(tiny_model_dir)
    assert (out / "tokenizer.json").exists() and (out / "model.safetensors").exists()
