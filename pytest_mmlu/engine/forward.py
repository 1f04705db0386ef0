"""One batch through the model: inputs packed (after a shared prefix) or right-padded, the LM
head on scored columns only, and every target's log-probability gathered on the device and
brought to the host once per batch (one sync, not one per request)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import attention
from .prefix import CachePrefix, SharedPrefix, expand_cache
from .tree import Row


@dataclass(frozen=True)
class Score:
    loglikelihood: float
    is_greedy: bool


@dataclass
class EngineStats:
    batch_sizes: list[int] = field(default_factory=list)
    rows: int = 0
    prefix_tokens: int = 0  # tokens run in shared-prefix passes
    suffix_tokens: int = 0  # real (unpadded) tokens run in batches
    padded_tokens: int = 0  # tokens run in batches, padding included
    scored_positions: int = 0
    peak_bytes: int = 0
    seconds: float = 0.0
    mode: str = "prefix"
    mode_reason: str | None = None  # why an evaluation ran in plain batches, where it could not share


@dataclass(frozen=True)
class ModelCalls:
    """How to call one model: what its forward accepts and which layers are its attention."""

    model: Any
    layers: frozenset[int] | None  # attention layer indices (shared-prefix attention), else None
    cache_kw: str  # "past_key_values" or "cache"
    keep_logits: bool  # forward takes logits_to_keep


def _packed(suffixes: list[np.ndarray], prefix_len: int) -> tuple[Any, Any, np.ndarray, np.ndarray]:
    """Suffixes end to end in one row: ids, positions, each row's start and end column."""
    import torch

    lengths = np.fromiter((len(s) for s in suffixes), dtype=np.int64, count=len(suffixes))
    ends = np.cumsum(lengths)
    starts = ends - lengths
    ids = torch.from_numpy(np.concatenate(suffixes).astype(np.int64))[None]
    positions = torch.from_numpy(prefix_len + np.arange(ends[-1]) - np.repeat(starts, lengths))[None]
    return ids, positions, starts, ends


def _right_padded(suffixes: list[np.ndarray], prefix_len: int) -> tuple[Any, Any, np.ndarray]:
    """Right-padded rows, as lm-eval's ``hf`` backend batches a causal model: every row starts
    in the first column, so no real token ever sees a pad (causal attention needs no mask,
    and a model whose own code ignores the mask scores as lm-eval scores it). Ids, positions
    (after a cached prefix), each row's end column."""
    import torch

    width = max(len(s) for s in suffixes)
    ids = np.zeros((len(suffixes), width), dtype=np.int64)
    for i, s in enumerate(suffixes):
        ids[i, : len(s)] = s
    positions = np.broadcast_to(np.arange(prefix_len, prefix_len + width), ids.shape).copy()
    ends = np.fromiter((len(s) for s in suffixes), dtype=np.int64, count=len(suffixes))
    return torch.from_numpy(ids), torch.from_numpy(positions), ends


def forward(
    calls: ModelCalls, batch: list[Row], prefix_len: int, prefix: SharedPrefix | CachePrefix | None, stats: EngineStats
) -> list[list[Score]]:
    """Score one batch: packed after a shared prefix, else right-padded rows (lm-eval's batching)."""
    import torch

    model = calls.model
    device = model.device
    suffixes = [r.tokens[prefix_len:] for r in batch]
    kwargs: dict[str, Any] = {"use_cache": False}
    if isinstance(prefix, SharedPrefix):
        ids, positions, starts, ends = _packed(suffixes, prefix_len)
        batch_row = np.zeros(len(batch), dtype=np.int64)  # every row lives in row 0 of the input
        segments = list(zip(starts.tolist(), (ends - starts).tolist()))
        stats.padded_tokens += ids.shape[1]
    else:
        ids, positions, ends = _right_padded(suffixes, prefix_len)
        batch_row = np.arange(len(batch), dtype=np.int64)
        if prefix is not None:  # after a cached prefix, positions go on from it; else the model's own
            kwargs[calls.cache_kw] = expand_cache(prefix.cache, len(batch))
            kwargs["use_cache"] = True
        stats.padded_tokens += ids.numel()
    # The LM head runs only on scored columns (their union over the batch's rows).
    columns = np.unique(np.concatenate([np.arange(end - r.scored, end) for r, end in zip(batch, ends)]))
    if prefix is not None:
        kwargs["position_ids"] = positions.to(device)
    if calls.keep_logits:
        kwargs["logits_to_keep"] = torch.from_numpy(columns).to(device)
    if isinstance(prefix, SharedPrefix):
        assert calls.layers is not None  # a shared prefix is made only where they are known
        with attention.shared_prefix(model, calls.layers, prefix.keys, prefix.values, segments):
            out = model(input_ids=ids.to(device), **kwargs)
    else:
        out = model(input_ids=ids.to(device), **kwargs)
    logits = out.logits if calls.keep_logits else out.logits[:, torch.from_numpy(columns).to(device), :]
    stats.suffix_tokens += sum(len(s) for s in suffixes)
    stats.scored_positions += len(columns) * logits.shape[0]
    return _gather(logits, batch, ends, batch_row, columns)


def _gather(
    logits: Any, batch: list[Row], ends: np.ndarray, batch_row: np.ndarray, columns: np.ndarray
) -> list[list[Score]]:
    """Each target's summed log-probability and greedy flag, computed on the logits' device
    and moved to the host in one transfer."""
    import torch

    # Host-side index arrays (numpy, no device work): one entry per target token.
    rows_b, cols, toks, owner = [], [], [], []
    target = 0
    for row, end, b in zip(batch, ends, batch_row):
        for _, cont in row.targets:
            n = len(cont)
            rows_b.append(np.full(n, b))
            cols.append(np.searchsorted(columns, np.arange(end - n, end)))
            toks.append(cont)
            owner.append(np.full(n, target))
            target += 1
    device = logits.device

    def on_device(parts: list[np.ndarray]) -> Any:
        return torch.from_numpy(np.concatenate(parts).astype(np.int64)).to(device)

    b_idx, c_idx, tok, own = on_device(rows_b), on_device(cols), on_device(toks), on_device(owner)
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    token_lp = logprobs[b_idx, c_idx, tok]
    missed = (logprobs.argmax(dim=-1)[b_idx, c_idx] != tok).float()
    sums = torch.zeros(target, dtype=torch.float32, device=device).index_add_(0, own, token_lp)
    misses = torch.zeros(target, dtype=torch.float32, device=device).index_add_(0, own, missed)
    host = torch.stack([sums, misses]).cpu().tolist()  # the batch's one device-to-host sync
    results: list[list[Score]] = []
    k = 0
    for row in batch:
        results.append([Score(host[0][k + j], host[1][k + j] == 0) for j in range(len(row.targets))])
        k += len(row.targets)
    return results
