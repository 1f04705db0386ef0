"""Batches sized to a memory budget: a per-row cost computed from the model's config for the real
sequence lengths, scaled by factors calibrated from the measured peaks of the first batches,
then checked after every batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..memory.errors import BudgetTooSmall, OutOfMemory
from ..sizes import format_gib


@dataclass(frozen=True)
class RowCost:
    """Analytic bytes for one row of a batch (before calibration)."""

    kv_per_token: int  # cache bytes per token, all layers (kept for the whole forward)
    act_per_token: int  # transient activation bytes per suffix token (one layer live at a time)
    attn_per_pair: int  # bytes per (query, key) pair when attention scores are materialized
    logit_bytes: int  # bytes per scored position (vocab row, its log-softmax, a copy)

    @classmethod
    def from_config(cls, config: Any, dtype_bytes: int) -> RowCost:
        cfg = getattr(config, "text_config", None) or config
        hidden = _first(cfg, "hidden_size", "n_embd")
        layers = _first(cfg, "num_hidden_layers", "n_layer")
        heads = _first(cfg, "num_attention_heads", "n_head")
        kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
        head_dim = getattr(cfg, "head_dim", None) or hidden // heads
        inter = getattr(cfg, "intermediate_size", None) or getattr(cfg, "n_inner", None) or 4 * hidden
        vocab = cfg.vocab_size
        return cls(
            # k and v per layer, plus one layer's GQA-expanded copy while attention runs.
            kv_per_token=2 * head_dim * dtype_bytes * (layers * kv_heads + heads),
            act_per_token=dtype_bytes * (10 * hidden + 4 * inter + 3 * heads * head_dim),
            attn_per_pair=2 * heads * 4,
            logit_bytes=3 * vocab * 4,
        )

    def row_bytes(self, prefix: int, suffix: int, scored: int, shared: bool = False) -> int:
        """Bytes one row adds; ``shared``: packed after a prefix kept once (``engine/attention``),
        so a row holds only its own keys and values, and attention is tiled."""
        if shared:
            return (self.kv_per_token + self.act_per_token) * suffix + self.logit_bytes * scored
        total = prefix + suffix
        return (
            self.kv_per_token * total
            + self.act_per_token * suffix
            + self.attn_per_pair * suffix * total
            + self.logit_bytes * scored
        )


def _first(cfg: Any, *names: str) -> int:
    for n in names:
        v = getattr(cfg, n, None)
        if v:
            return int(v)
    raise ValueError(f"config has none of {names}")


class BatchPlanner:
    """Chooses rows per batch so that the measured peak stays under ``limit``.

    peak ~= baseline + prefix_cache + fixed + scale * rows * row_bytes(P, S, k),
    where prefix_cache covers the ``held`` prefix tokens (default: the P tokens).
    ``scale`` starts at 1.0 and ``fixed`` at the allocator's slack, and both are re-fitted from the
    measured peaks: after the first two batches at 1 and 2 rows, and upward
    after any batch that used more than predicted.  ``fixed`` never drops below the slack:
    the freed memory the heap keeps resident depends on its state, not on the batch, so a
    calibration that caught it low says nothing of later batches (an int8 SmolLM2 calibrated
    at 29 MiB of overhead; a later batch showed 64 MiB more and breached 0.8 GiB by 12 MiB).
    """

    SAFETY = 0.92  # plan to this share of the headroom; the rest absorbs measurement noise
    # A calibrated row cost below this share of the model's is not believed: the growth from
    # one row to two was lost in the allocator's noise (int8 SmolLM2: flat, then 0.3-0.7).
    MIN_SCALE = 0.25

    def __init__(
        self,
        cost: RowCost,
        baseline: int,
        limit: int,
        device: str,
        budget_declared: bool,
        max_batch_tokens: int,
        fixed_rows: int | None = None,
        slack: int = 0,
    ) -> None:
        self.cost = cost
        self.baseline = baseline
        self.limit = limit
        self.device = device
        self.budget_declared = budget_declared
        self.max_batch_tokens = max_batch_tokens
        self.fixed_rows = fixed_rows
        self.scale = 1.0
        self.slack = slack
        self.fixed = slack  # the overhead of any batch: at least the allocator's slack
        self._calibration: list[tuple[int, float]] = []  # (rows*row_bytes, measured delta)
        self.oom_cap: int | None = None
        self.shared_prefix = False  # set by the engine when batches are packed after a shared prefix

    def _row(self, prefix: int, suffix: int, scored: int) -> int:
        return self.cost.row_bytes(prefix, suffix, scored, self.shared_prefix)

    def _prefix_cache(self, prefix: int, held: int | None) -> int:
        """Bytes of the prefix keys and values held (``held`` tokens, else the P tokens)."""
        return self.cost.kv_per_token * (prefix if held is None else held)

    def predicted(self, rows: int, prefix: int, suffix: int, scored: int, held: int | None = None) -> int:
        per_row = self._row(prefix, suffix, scored)
        return int(self.baseline + self._prefix_cache(prefix, held) + self.fixed + self.scale * rows * per_row)

    def check_fits(self, prefix: int, suffix: int, scored: int, held: int | None = None) -> None:
        """Raise BudgetTooSmall if one row of this shape cannot fit."""
        need = self.predicted(1, prefix, suffix, scored, held)
        if need > self.limit and (self.budget_declared or self.fixed_rows is None):
            detail = f"model and runtime {format_gib(self.baseline)} + one row of {prefix + suffix} tokens"
            if self.fixed:
                detail += f" + allocator slack {format_gib(self.fixed)}"
            raise BudgetTooSmall(self.limit, need, self.device, detail)

    def rows(self, prefix: int, suffix: int, scored: int, remaining: int, held: int | None = None) -> int:
        if self.fixed_rows is not None:  # a fixed batch size still halves after an out-of-memory
            return max(1, min(self.fixed_rows, remaining, self.oom_cap or remaining))
        if len(self._calibration) < 2:
            wanted = len(self._calibration) + 1  # calibrate at 1 row, then 2
        else:
            per_row = self.scale * self._row(prefix, suffix, scored)
            room = (self.limit - self.baseline) * self.SAFETY - self.fixed - self._prefix_cache(prefix, held)
            wanted = int(room // per_row) if per_row > 0 else remaining
        token_cap = max(1, self.max_batch_tokens // max(1, suffix))
        rows = min(wanted, token_cap, remaining)
        if self.oom_cap is not None:
            rows = min(rows, self.oom_cap)
        # Calibration batches must fit too: shrink until the prediction does.
        while rows > 1 and self.predicted(rows, prefix, suffix, scored, held) > self.limit:
            rows -= 1
        return max(1, rows)

    def observe(self, rows: int, prefix: int, suffix: int, scored: int, peak: int, held: int | None = None) -> None:
        if self.fixed_rows is not None:
            return
        x = rows * self._row(prefix, suffix, scored)
        y = peak - self.baseline - self._prefix_cache(prefix, held)
        if len(self._calibration) < 2:
            self._calibration.append((x, y))
            if len(self._calibration) == 2:
                (x1, y1), (x2, y2) = self._calibration
                if x2 > x1 and y2 - y1 >= self.MIN_SCALE * (x2 - x1):
                    self.scale = (y2 - y1) / (x2 - x1)
                    self.fixed = max(self.slack, int(y1 - self.scale * x1))
                elif self.slack:  # the second row hid in the heap's slack: the model's row cost
                    self.scale = 1.0
                    self.fixed = max(self.slack, int(y2 - x2))
                else:  # no usable slope: attribute everything to rows (conservative)
                    self.scale = max(1.0, max(y1 / x1, y2 / x2))
            else:
                self.scale = max(self.scale, y / x)
        elif y > self.fixed + self.scale * x:
            self.scale = (y - self.fixed) / x

    def out_of_memory(self, where: str) -> OutOfMemory:
        """The error for an out-of-memory where nothing can shrink, naming this planner's bound."""
        return OutOfMemory(self.device, where, self.limit, self.budget_declared)

    def on_oom(self, rows: int) -> None:
        self.oom_cap = max(1, rows // 2)
