"""One evaluation as it is asked for: the questions (``EvalSpec``), the memory budget, the
model variant, and the identity those make in this job (``identity.py``). A test's marks and
the session make it once (``MmluSession.request``); the cache, the evaluator and the record
all take this one value, so none of them can pair a spec with another evaluation's identity.

The scoring engine below the evaluator sees none of it: it takes token requests and a budget.
"""

from __future__ import annotations

from dataclasses import dataclass

from .identity import Identity
from .markers import EvalSpec
from .models.variants import Variant


@dataclass(frozen=True)
class EvalRequest:
    spec: EvalSpec
    budget: int | None  # bytes; None: no budget declared
    variant: Variant
    identity: Identity  # known before anything is loaded
