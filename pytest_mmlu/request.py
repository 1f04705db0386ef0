"""One evaluation as it is asked for: the questions (``EvalSpec``), the memory budget, the
model variant, and the identity those make in this job (``identity.py``). A test's marks and
the session make it once (``MmluSession.request``) and ``MmluSession.evaluate`` takes it
whole: the identity the cache is asked with, the model loaded, the spec and budget evaluated
and the identity the result is stamped with all come from this one value, so that no step
can pair a spec with another evaluation's identity or variant.

Below the session the parts go their own ways: the evaluator takes the spec and the budget
(``mmlu.evaluation.Evaluator``, also used alone by benchmarks), and the scoring engine only
token requests and a budget.
"""

from __future__ import annotations

from dataclasses import dataclass

from .identity import Identity
from .markers import EvalSpec, TaskSpec
from .models.variants import Variant


@dataclass(frozen=True)
class EvalRequest:
    spec: EvalSpec | TaskSpec
    budget: int | None  # bytes; None: no budget declared
    variant: Variant
    identity: Identity  # known before anything is loaded
