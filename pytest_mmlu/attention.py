"""Shared-prefix attention over packed suffixes.

A batch's suffixes (the questions after a shared few-shot prefix) are packed
end to end into one sequence: no padding at all.  In every layer the packed
queries attend (1) causally to their own row's segment only and (2) to each
piece of the shared prefix (a subject's few-shot block, then a reading passage
several questions share), whose keys and values are kept once for the whole
batch, never copied per row or per piece; the partial results are merged by
their log-sum-exp.  That is exactly softmax attention over [prefix, own
suffix], up to float rounding.  A prefix is itself run this way, one chunk at
a time, and its keys and values are captured for the batches that follow.

On CPU every part uses torch's tiled flash-attention kernel, which returns the
log-sum-exp; elsewhere (and for logit softcapping) chunked matrix products.
It plugs into transformers as an attention implementation, switched on for one
forward by :func:`shared_prefix`.  A model whose own code computes attention
(remote code, ALiBi models) never calls it: :func:`shared_prefix` checks after
every forward that each attention layer came through here and raises
:class:`AttentionBypassed` otherwise, so such a model is never scored without
its prefix.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

NAME = "pytest_mmlu_shared_prefix"
# Debug mode: set to 1 to check every shared-prefix attention call against float64 softmax
# attention (slow); a mismatch raises naming the call, for a drift seen only on some machines.
CHECK_ENV = "PYTEST_MMLU_CHECK_ATTENTION"
# Transient score matrix per chunk in the portable path.
SCORE_CHUNK_BYTES = 8 * 2**20

_state = threading.local()


class AttentionBypassed(Exception):
    """A forward ran without our attention in some layers: its prefix keys were never seen."""

    def __init__(self, missing: Sequence[int], expected: int, detail: str | None = None) -> None:
        self.missing = sorted(missing)
        super().__init__(detail or f"attention of {len(self.missing)} of {expected} layers bypassed "
                                   f"the attention interface (layers {self.missing[:8]})")


@dataclass
class _Forward:
    """What one shared-prefix forward needs, and which layers actually came through."""

    keys: Sequence[Sequence[Any]] | None
    values: Sequence[Sequence[Any]] | None
    segments: Sequence[tuple[int, int]]
    capture: Callable[[int, Any, Any], None] | None
    seen: set[int] = field(default_factory=set)


def _attention(module: Any, query: Any, key: Any, value: Any, attention_mask: Any,
               scaling: float | None = None, dropout: float = 0.0, softcap: float | None = None,
               **_: Any) -> tuple[Any, None]:
    """query [1, H, T, d], key/value [1, KVH, T, d]: suffixes packed end to end; -> [1, T, H, d]."""
    call: _Forward = _state.current
    keys, values, segments, capture = call.keys, call.values, call.segments, call.capture
    layer = module.layer_idx
    call.seen.add(layer)
    if capture is not None:  # a prefix chunk: its keys and values serve what follows
        capture(layer, key[0], value[0])
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    group = query.shape[1] // key.shape[1]
    if query.device.type == "cpu" and softcap is None:
        part = _flash_cpu
    else:
        part = functools.partial(_portable, softcap=softcap)
    # Within the packed suffixes each token sees only its own row, causally ...
    if group > 1:
        key, value = key.repeat_interleave(group, dim=1), value.repeat_interleave(group, dim=1)
    heads, total, dim = query.shape[1:]
    out = query.new_empty((heads, total, dim), dtype=torch.float32)
    lse = query.new_empty((heads, total), dtype=torch.float32)
    for start, length in segments:
        sl = slice(start, start + length)
        out[:, sl], lse[:, sl] = part(query[0, :, sl], key[0, :, sl], value[0, :, sl], scale, causal=True)
    # ... and every packed token sees every piece of the shared prefix.
    for piece_k, piece_v in zip(keys[layer], values[layer]) if keys is not None else ():
        out, lse = _merge(out, lse, *_grouped(part, query[0], piece_k, piece_v, scale))
    if os.environ.get(CHECK_ENV, "") not in ("", "0"):
        _check(layer, query[0], key[0], value[0], keys[layer] if keys is not None else [],
               values[layer] if values is not None else [], segments, scale, softcap, out)
    return out.to(query.dtype).transpose(0, 1).unsqueeze(0), None


class AttentionMismatch(AssertionError):
    """Debug mode found a shared-prefix attention output off from float64 attention."""


def _check(layer: int, q: Any, k: Any, v: Any, piece_ks: Sequence[Any], piece_vs: Sequence[Any],
           segments: Sequence[tuple[int, int]], scale: float, softcap: float | None, out: Any) -> None:
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
        own = scores[:, :, keys.shape[1] - length:]
        own.masked_fill_(torch.ones(length, length, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
        want = torch.matmul(torch.softmax(scores, dim=-1), torch.cat([*prefix_v, per_head(v[:, rows])], dim=1))
        worst = max(worst, float((out[:, rows].double() - want).abs().max()))
    limit = 1e-4 if q.dtype == torch.float32 else 2e-2
    if worst > limit:
        raise AttentionMismatch(
            f"{CHECK_ENV}: layer {layer} shared-prefix attention off by {worst:.2e} (> {limit:g}) from "
            f"float64: q {tuple(q.shape)} strides {q.stride()} {q.dtype}, prefix pieces "
            f"{[tuple(p.shape) for p in piece_ks]}, segments {list(segments)[:4]}..., "
            f"{torch.get_num_threads()} threads, capability {torch.backends.cpu.get_cpu_capability()}")


def _grouped(part: Any, q: Any, k: Any, v: Any, scale: float) -> tuple[Any, Any]:
    """Non-causal attention of q [H, T, d] to k/v [KVH, P, d] without repeating k and v:
    the query heads that share a key head are stacked into one longer query block."""
    heads, total, dim = q.shape
    kv_heads = k.shape[0]
    out, lse = part(q.reshape(kv_heads, heads // kv_heads * total, dim), k, v, scale, causal=False)
    return out.reshape(heads, total, dim), lse.reshape(heads, total)


def _merge(out_a: Any, lse_a: Any, out_b: Any, lse_b: Any) -> tuple[Any, Any]:
    """Softmax attention over the union of two key sets, from each part's output and LSE."""
    top = torch.maximum(lse_a, lse_b)
    w_a = (lse_a - top).exp_()
    w_b = (lse_b - top).exp_()
    norm = w_a + w_b
    out = out_a.mul_((w_a / norm).unsqueeze(-1)).add_(out_b.mul_((w_b / norm).unsqueeze(-1)))
    return out, top.add_(norm.log_())


_CPU_FLASH = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
# dtypes the CPU flash kernel refused in this process: torch built for a lower
# ATEN_CPU_CAPABILITY than the CPU has can fail on bf16 ("pack_vnni2 is only supported
# when avx512 is supported"); those calls take the portable path instead of crashing.
_FLASH_REFUSED: set[Any] = set()


def _flash_cpu(q: Any, k: Any, v: Any, scale: float, causal: bool) -> tuple[Any, Any]:
    """torch's tiled CPU flash kernel, which also returns the log-sum-exp of each query
    (its products and softmax run in fp32 whatever the inputs' dtype)."""
    if q.dtype not in _FLASH_REFUSED:
        try:
            out, lse = _CPU_FLASH(q[None], k[None], v[None], 0.0, causal, scale=scale)
            return out[0].float(), lse[0].float()
        except RuntimeError as exc:
            if "only supported when" not in str(exc) and "not supported" not in str(exc):
                raise  # anything but the kernel refusing this dtype on this CPU is a real error
            _FLASH_REFUSED.add(q.dtype)
    return _portable(q, k, v, scale, causal, softcap=None)


def _portable(q: Any, k: Any, v: Any, scale: float, causal: bool, softcap: float | None) -> tuple[Any, Any]:
    """Plain matrix products in chunks of queries (any device; logit softcapping)."""
    heads, n_q, _ = q.shape
    n_k = k.shape[1]
    rows = max(1, SCORE_CHUNK_BYTES // (heads * n_k * 4))
    out = q.new_empty(q.shape, dtype=torch.float32)
    lse = q.new_empty((heads, n_q), dtype=torch.float32)
    for start in range(0, n_q, rows):
        # Scaled before the product: fp16 q.k can pass 65504 where q.k * scale does not.
        qc = q[:, start:start + rows] * scale
        scores = torch.matmul(qc, k.transpose(1, 2)).float()
        if softcap is not None:
            scores = torch.tanh(scores / softcap) * softcap
        if causal:
            i = torch.arange(start, start + qc.shape[1], device=q.device)[:, None]
            scores.masked_fill_(torch.arange(n_k, device=q.device)[None, :] > i, float("-inf"))
        chunk_lse = torch.logsumexp(scores, dim=-1)
        probs = scores.sub_(chunk_lse.unsqueeze(-1)).exp_()
        out[:, start:start + qc.shape[1]] = torch.matmul(probs.to(v.dtype), v).float()
        lse[:, start:start + qc.shape[1]] = chunk_lse
    return out, lse


def register() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(NAME, _attention)


def attention_layers(model: Any) -> frozenset[int] | None:
    """The layer indices of the model's attention modules, or None when some module has none
    (it could not find its prefix keys and values)."""
    modules = [m for name, m in model.named_modules() if name.endswith(("self_attn", ".attn", ".attention"))]
    indices = [getattr(m, "layer_idx", None) for m in modules]
    if not modules or not all(isinstance(i, int) for i in indices):
        return None
    return frozenset(indices)


@contextlib.contextmanager
def shared_prefix(model: Any, layers: frozenset[int], keys: Sequence[Sequence[Any]] | None,
                  values: Sequence[Sequence[Any]] | None, segments: Sequence[tuple[int, int]],
                  capture: Callable[[int, Any, Any], None] | None = None) -> Iterator[None]:
    """Run the model's attention as shared-prefix attention over packed suffixes for one forward.

    ``layers``: the attention layers that must come through (:func:`attention_layers`);
    ``keys``/``values``: per layer, the prefix pieces [KVH, P_i, d] (None: no prefix);
    ``segments``: (start, length) of each packed row; ``capture``: called with each layer's
    index, keys and values [KVH, T, d] of the packed tokens, when a prefix chunk is run.
    Raises :class:`AttentionBypassed` after a forward in which some layer did not.
    """
    config = model.config
    previous = config._attn_implementation
    call = _state.current = _Forward(keys, values, segments, capture)
    config._attn_implementation = NAME
    try:
        yield
    finally:
        config._attn_implementation = previous
        _state.current = None
    if call.seen != layers:
        raise AttentionBypassed(layers - call.seen, len(layers))
