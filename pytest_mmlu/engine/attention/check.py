"""Debug mode: every shared-prefix attention call checked against float64 softmax attention."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

# Set to 1 to check every shared-prefix attention call against float64 softmax attention
# (slow); a mismatch raises naming the call, for a drift seen only on some machines.
CHECK_ENV = "PYTEST_MMLU_CHECK_ATTENTION"


class AttentionMismatch(AssertionError):
    """Debug mode found a shared-prefix attention output off from float64 attention."""


def check(
    layer: int,
    q: Any,
    k: Any,
    v: Any,
    piece_ks: Sequence[Any],
    piece_vs: Sequence[Any],
    segments: Sequence[tuple[int, int]],
    scale: float,
    softcap: float | None,
    out: Any,
) -> None:
    """Each packed row's output against float64 softmax attention over [prefix pieces, its own
    segment, causally]: q/k/v [H, T, d] (k, v already repeated per query head)."""
    heads = q.shape[0]

    def per_head(t: Any) -> Any:
        return t.double().repeat_interleave(heads // t.shape[0], dim=0)

    prefix_k = [per_head(piece) for piece in piece_ks]
    prefix_v = [per_head(piece) for piece in piece_vs]
    worst = 0.0
    for start, length in segments:
        rows = slice(start, start + length)
        keys = torch.cat([*prefix_k, per_head(k[:, rows])], dim=1)
        scores = torch.matmul(q[:, rows].double(), keys.transpose(1, 2)) * scale
        if softcap is not None:
            scores = torch.tanh(scores / softcap) * softcap
        own = scores[:, :, keys.shape[1] - length :]
        own.masked_fill_(torch.ones(length, length, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
        want = torch.matmul(torch.softmax(scores, dim=-1), torch.cat([*prefix_v, per_head(v[:, rows])], dim=1))
        worst = max(worst, float((out[:, rows].double() - want).abs().max()))
    limit = 1e-4 if q.dtype == torch.float32 else 2e-2
    if worst > limit:
        raise AttentionMismatch(
            f"{CHECK_ENV}: layer {layer} shared-prefix attention off by {worst:.2e} (> {limit:g}) from "
            f"float64: q {tuple(q.shape)} strides {q.stride()} {q.dtype}, prefix pieces "
            f"{[tuple(p.shape) for p in piece_ks]}, segments {list(segments)[:4]}..., "
            f"{torch.get_num_threads()} threads, capability {torch.backends.cpu.get_cpu_capability()}"
        )
