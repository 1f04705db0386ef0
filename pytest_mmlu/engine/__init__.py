"""The scoring engine: token requests in, log-likelihoods out.

Same numbers as lm-eval's HF backend (each request is scored on
``(context + continuation)[-(max_length + 1):][:-1]``), computed with far less
work and memory:

1. Requests with the same input row (the four choices of a question) share
   one row; only their target tokens differ (``tree.py``).
2. Rows are sorted into a tree of shared token prefixes (a subject's description
   and few-shot examples, then a reading passage several questions share).  Each
   prefix runs once, in chunks; its keys and values are kept once, as pieces that
   every row below it attends to (``attention/``), never copied per row
   (``prefix.py``).
3. Only the scored positions reach the LM head (``logits_to_keep``): no
   full-vocabulary logits for the prefix or the question text; each batch's
   targets are gathered on the device and reach the host in one transfer
   (``forward.py``).
4. Suffixes are packed end to end with no padding, longest first; rows per batch
   come from the memory planner (``planner.py``), retried smaller on OOM
   (``scoring.py``).  Models whose attention cannot be swapped run the prefix
   into their own KV cache and pad the suffixes on the right, as lm-eval batches.
5. Models that cannot take a shared cache (sliding-window attention shorter
   than the rows, or no cache/position inputs) are scored in plain batches
   with no prefix: same answers, more work.  So is a model whose own code
   computes attention (``attention.AttentionBypassed``): every shared-prefix
   forward checks that each layer came through our attention, and the first
   that did not restarts the evaluation in plain batches.
"""

from .forward import EngineStats, Score
from .limits import DEFAULT_MAX_LENGTH, resolve_max_length
from .scoring import ScoringEngine

__all__ = ["DEFAULT_MAX_LENGTH", "EngineStats", "Score", "ScoringEngine", "resolve_max_length"]
