"""What the environment adds to an evaluation's identity: the version of every library that can
change a score, pytest-mmlu's own source, and the kind of device (never its index).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
from pathlib import Path
from typing import Any

import pytest_mmlu

# Libraries whose version can change a score: the forward (torch, transformers, accelerate's
# placement), the weights (torchao, bitsandbytes, peft, safetensors), the tokens (tokenizers,
# sentencepiece), the prompts (jinja2 renders chat templates; lm-eval's task definitions).
SCORE_LIBRARIES = (
    "torch",
    "transformers",
    "tokenizers",
    "accelerate",
    "safetensors",
    "torchao",
    "bitsandbytes",
    "peft",
    "sentencepiece",
    "jinja2",
    "lm_eval",
)


def device_kind(device: str, gpu_name: Any = None) -> str:
    """``cpu`` or ``cuda:<GPU model>`` of the first GPU a model runs on (``cuda:1``,
    ``cuda:0+cuda:1``): never the index, so xdist workers on identical GPUs are the same."""
    if not device.startswith("cuda"):
        return "cpu"
    if gpu_name is None:
        import torch

        gpu_name = torch.cuda.get_device_name
    first = device.split("+")[0]
    index = int(first.split(":")[1]) if ":" in first else 0
    return f"cuda:{gpu_name(index)}"


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def software_versions() -> dict[str, Any]:
    """Versions read at call time (not import time), so that what runs is what is identified;
    torch's CUDA build too, and pytest-mmlu's own source (an edit changes scores too)."""
    import torch

    versions: dict[str, Any] = {name: _package_version(name) for name in SCORE_LIBRARIES}
    cuda = torch.version.cuda
    versions.update(
        torch=str(torch.__version__),
        torch_cuda=None if cuda is None else str(cuda),
        pytest_mmlu=pytest_mmlu.__version__,
        pytest_mmlu_source=source_digest(),
    )
    # A forced attention backend computes the same scores another way (within 1e-6): told apart.
    forced = os.environ.get("PYTEST_MMLU_ATTENTION_BACKEND")
    if forced:
        versions["attention_backend"] = forced
    return versions


def source_digest(root: str = "") -> str:
    """sha256 of pytest-mmlu's own modules (or those under ``root``), subpackages (the
    engine) included."""

    folder = Path(root) if root else Path(__file__).parent
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*.py")):
        h.update(path.relative_to(folder).as_posix().encode() + b"\0" + path.read_bytes())
    return h.hexdigest()
