"""CPU: torch's tiled flash-attention kernel, which returns the log-sum-exp (its products and
softmax run in fp32 whatever the inputs' dtype).  Measured fastest on CPU (bench/w5_bench.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .. import compose
from . import portable

PRIORITY = 20

KERNEL = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
# dtypes the kernel refused in this process: torch built for a lower ATEN_CPU_CAPABILITY
# than the CPU has can fail on bf16 ("pack_vnni2 is only supported when avx512 is
# supported"); those calls take the portable path instead of crashing.
REFUSED: set[Any] = set()


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
    if q.dtype not in REFUSED:
        try:
            out, lse = KERNEL(q[None], k[None], v[None], 0.0, causal, scale=scale)
            return out[0].float(), lse[0].float()
        except RuntimeError as exc:
            if "only supported when" not in str(exc) and "not supported" not in str(exc):
                raise  # anything but the kernel refusing this dtype on this CPU is a real error
            REFUSED.add(q.dtype)
    return portable.part(q, k, v, scale, causal)
