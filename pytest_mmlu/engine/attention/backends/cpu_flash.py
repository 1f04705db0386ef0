"""CPU: torch's tiled flash-attention kernel, which returns the log-sum-exp (its products and
softmax run in fp32 whatever the inputs' dtype).  Measured fastest on CPU (bench/w5_bench.py)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import torch

from .. import compose
from . import portable

PRIORITY = 20

KERNEL = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
PROBE_TOKENS, PROBE_HEAD_DIM = 256, 16


def _is_refusal(exc: RuntimeError) -> bool:
    return "only supported when" in str(exc) or "not supported" in str(exc)


@functools.cache
def refuses(dtype: Any) -> bool:
    """Whether the kernel refuses ``dtype`` on this CPU, asked once per process on a small
    input: torch built for a lower ATEN_CPU_CAPABILITY than the CPU has can fail on bf16
    ("pack_vnni2 is only supported when avx512 is supported"). Any other error is raised."""
    q = torch.zeros((1, 1, PROBE_TOKENS, PROBE_HEAD_DIM), dtype=dtype)
    try:
        KERNEL(q, q, q, 0.0, True, scale=0.25)
    except RuntimeError as exc:
        if not _is_refusal(exc):
            raise
        return True
    return False


def accepts(query: Any, softcap: float | None) -> bool:
    return query.device.type == "cpu" and softcap is None


def attend(
    q: Any,
    k: Any,
    v: Any,
    piece_ks: Sequence[Any],
    piece_vs: Sequence[Any],
    segments: Sequence[tuple[int, int]],
    scale: float,
    softcap: float | None,
) -> Any:
    return compose.attend(part, q, k, v, piece_ks, piece_vs, segments, scale)


def part(q: Any, k: Any, v: Any, scale: float, causal: bool) -> tuple[Any, Any]:
    """The kernel where it takes the dtype; the portable path, with the same numbers, where it
    refuses it (asked once, and again should a shape the probe passed be refused)."""
    if not refuses(q.dtype):
        try:
            out, lse = KERNEL(q[None], k[None], v[None], 0.0, causal, scale=scale)
            return out[0].float(), lse[0].float()
        except RuntimeError as exc:
            if not _is_refusal(exc):
                raise  # anything but the kernel refusing this dtype on this CPU is a real error
    return portable.part(q, k, v, scale, causal)
