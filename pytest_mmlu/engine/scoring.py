"""The scoring seam: token requests in, log-likelihoods out (:class:`ScoringEngine`).

Orchestration only: rows and their prefix tree (``tree.py``), each prefix run
once (``prefix.py``), batches sized by the memory planner with OOM retry (here),
one batch through the model (``forward.py``), attention backends
(``attention/``).
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ..memory.allocator import release_memory
from ..memory.errors import is_oom
from . import attention, prefix
from .forward import EngineStats, ModelCalls, Score, forward
from .limits import sliding_window
from .planner import BatchPlanner
from .tree import Node, Row, build_rows, build_tree, flat


class ScoringEngine:
    """Scores token requests on one causal LM; the one seam used by plugin, bench and lm-eval."""

    def __init__(self, model: Any, max_length: int, planner_factory: Callable[[], BatchPlanner], meter: Any) -> None:
        self.model = model
        self.max_length = max_length
        self.planner_factory = planner_factory
        self.meter = meter
        params = inspect.signature(model.forward).parameters
        cache_kw = "cache" if "cache" in params else "past_key_values"
        self._can_prefix = cache_kw in params and "position_ids" in params
        keep_logits = "logits_to_keep" in params
        self._window = sliding_window(model.config)
        layers = attention.attention_layers(model)
        self._calls = ModelCalls(model, layers, cache_kw, keep_logits)
        self._shared_attention = self._can_prefix and keep_logits and layers is not None
        self._bypassed: str | None = None  # set once the model's own code was seen computing attention
        self._planner: BatchPlanner | None = None  # the current score() call's
        if self._shared_attention:
            attention.register()
        self.stats = EngineStats()

    # -- public seam ---------------------------------------------------------------------------
    def score(self, requests: Sequence[Any], progress: Callable[[int], None] | None = None) -> list[Score]:
        """Log-likelihood and greedy flag of each request's continuation, in request order.

        ``requests``: objects with ``context`` and ``continuation`` token ids (tuples, lists or
        int32 arrays; requests of one question may share one context array).  ``progress`` is
        called with the number of requests finished so far.
        """
        start = time.perf_counter()
        try:
            results = self._score(requests, progress)
        except attention.AttentionBypassed as exc:
            # Scores computed so far saw no prefix: drop them all and score without sharing.
            self._bypassed = f"the model's own code computes attention ({exc})"
            results = self._score(requests, progress)
        self.stats.seconds = time.perf_counter() - start
        return results

    def rows(self, requests: Sequence[Any]) -> list[Row]:
        """The unique model inputs of ``requests`` (lm-eval's truncation applied)."""
        return build_rows(requests, self.max_length)

    def _score(self, requests: Sequence[Any], progress: Callable[[int], None] | None) -> list[Score]:
        import torch

        self.stats = EngineStats()
        rows = self.rows(requests)
        self.stats.rows = len(rows)
        longest = max((len(r.tokens) for r in rows), default=0)
        if self._bypassed:
            use_prefix, self.stats.mode_reason = False, self._bypassed
        elif not self._can_prefix:
            use_prefix, self.stats.mode_reason = False, "the model takes no cache or position ids"
        elif self._window is not None and longest > self._window:
            use_prefix = False
            self.stats.mode_reason = f"sliding window {self._window} < longest row {longest}"
        else:
            use_prefix = True
        self.stats.mode = "prefix" if use_prefix else "plain"
        root = build_tree(rows) if use_prefix else flat(rows)
        planner = self._planner = self.planner_factory()
        shared = planner.shared_prefix = use_prefix and self._shared_attention
        held = root.held_tokens(shared)
        for node in root.walk():
            if node.rows:
                planner.check_fits(
                    node.prefix_len,
                    max(len(r.tokens) for r in node.rows) - node.prefix_len,
                    max(r.scored for r in node.rows),
                    held[id(node)],
                )
        results: list[Score | None] = [None] * len(requests)
        done = 0

        def visit(node: Node, parent: prefix.SharedPrefix | prefix.CachePrefix | None) -> None:
            nonlocal done
            self.meter.reset_peak()
            here: prefix.SharedPrefix | prefix.CachePrefix | None
            if node.prefix_len:
                here = self._run_prefix(node, parent, shared)
            else:  # packed with no prefix where the attention allows, else padded batches
                here = prefix.SharedPrefix(None, None, 0) if shared else None
            for batch in self._batches(node.rows, node.prefix_len, held[id(node)], here, planner):
                for row, scores in batch:
                    for (req_index, _), score in zip(row.targets, scores):
                        results[req_index] = score
                    done += len(row.targets)
                if progress is not None:
                    progress(done)
            for child in node.children:
                visit(child, here if node.prefix_len else None)

        self.meter.reset_peak()
        with torch.inference_mode():
            visit(root, None)
        self.stats.peak_bytes = max(self.stats.peak_bytes, self.meter.peak())
        return results  # type: ignore[return-value]

    # -- batching ------------------------------------------------------------------------------
    def _batches(
        self,
        rows: list[Row],
        prefix_len: int,
        held: int,
        here: prefix.SharedPrefix | prefix.CachePrefix | None,
        planner: BatchPlanner,
    ) -> Iterator[list[tuple[Row, list[Score]]]]:
        """Yield lists of (row, scores), longest suffixes first, sized by the planner; a batch
        that runs out of memory is retried smaller."""
        pending = sorted(rows, key=lambda r: len(r.tokens), reverse=True)
        while pending:
            suffix = len(pending[0].tokens) - prefix_len
            scored = max(r.scored for r in pending[:64])
            n = planner.rows(prefix_len, suffix, scored, len(pending), held)
            batch = pending[:n]
            try:
                self.meter.reset_peak()
                scores = forward(self._calls, batch, prefix_len, here, self.stats)
            except Exception as exc:
                if not is_oom(exc):
                    raise
                release_memory(str(self.model.device))
                if n == 1:
                    raise planner.out_of_memory(
                        f"at batch 1 (a row of {suffix} tokens after a {prefix_len}-token prefix)"
                    ) from None
                planner.on_oom(n)
                continue
            peak = self.meter.peak()
            self.stats.peak_bytes = max(self.stats.peak_bytes, peak)
            planner.observe(n, prefix_len, suffix, scored, peak, held)
            self.stats.batch_sizes.append(n)
            del pending[:n]
            yield list(zip(batch, scores))

    # -- prefixes ------------------------------------------------------------------------------
    def _run_prefix(
        self, node: Node, parent: prefix.SharedPrefix | prefix.CachePrefix | None, shared: bool
    ) -> prefix.SharedPrefix | prefix.CachePrefix:
        """Run a node's prefix once, on top of its parent's when there is one."""
        start = 0 if parent is None else parent.length
        calls = self._calls
        try:
            here: prefix.SharedPrefix | prefix.CachePrefix
            if shared:  # shared attention: the layers are known and every prefix above is shared
                assert calls.layers is not None and not isinstance(parent, prefix.CachePrefix)
                here = prefix.run_shared(self.model, calls.layers, node, parent, start)
            else:
                assert not isinstance(parent, prefix.SharedPrefix)
                here = prefix.run_cached(self.model, calls.cache_kw, calls.keep_logits, node, parent, start)
        except Exception as exc:
            if not is_oom(exc):
                raise
            release_memory(str(self.model.device))
            planner = self._planner or self.planner_factory()
            raise planner.out_of_memory(
                f"in a shared-prefix pass ({node.prefix_len - start} tokens in chunks of {prefix.PREFIX_CHUNK})"
            ) from None
        self.stats.prefix_tokens += node.prefix_len - start
        self.stats.peak_bytes = max(self.stats.peak_bytes, self.meter.peak())
        return here
