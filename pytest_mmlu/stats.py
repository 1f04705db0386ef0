"""Paired comparison of two runs on the same questions: the exact McNemar test.

Only the discordant questions carry information about a difference: ``lost``
(right before, wrong now) and ``gained`` (wrong before, right now).  Under the
null hypothesis of no difference each discordant question is lost or gained
with probability 1/2, so ``lost ~ Binomial(lost + gained, 1/2)``; the one-sided
p-value for "worse now" is P(X >= lost).

A metric with values between 0 and 1 per question (an lm-eval task's ``mc2``) is compared
the same way: ``lost`` counts the questions whose value fell, ``gained`` those whose value
rose, which is the exact sign test (McNemar's test is the sign test of 0/1 values), and the
drop is the difference of the means. Values within ``TIE`` of each other are the same value
(two fp32 runs of one model differ in the last digits, which is no change).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from math import comb

TIE = 1e-6  # a metric's values this close are one value (0/1 values are never this close)


def binom_tail(k: int, n: int) -> float:
    """P(X >= k) for X ~ Binomial(n, 1/2), exact."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    return sum(comb(n, i) for i in range(k, n + 1)) / 2**n


@dataclass(frozen=True)
class PairedComparison:
    n: int
    base_correct: float  # right answers, or the sum of the values
    new_correct: float
    lost: int
    gained: int

    @property
    def base_accuracy(self) -> float:
        return self.base_correct / self.n if self.n else 0.0

    @property
    def new_accuracy(self) -> float:
        return self.new_correct / self.n if self.n else 0.0

    @property
    def drop(self) -> float:
        return self.base_accuracy - self.new_accuracy

    @property
    def p_worse(self) -> float:
        """One-sided exact McNemar p-value for 'the new run is worse'."""
        return binom_tail(self.lost, self.lost + self.gained)

    @property
    def p_better(self) -> float:
        return binom_tail(self.gained, self.lost + self.gained)

    def _beyond(self, change: float, max_drop: float) -> bool:
        """change / n > max_drop, exactly: ``max_drop`` as the decimal written (0.02 is 1/50),
        never a float subtraction that lands a hair above it (0.55 - 0.30 > 0.25)."""
        return self.n > 0 and Fraction(change) / self.n > Fraction(repr(max_drop))

    def regressed(self, max_drop: float, alpha: float) -> bool:
        return self._beyond(self.base_correct - self.new_correct, max_drop) and self.p_worse < alpha

    def improved(self, max_drop: float, alpha: float) -> bool:
        return self._beyond(self.new_correct - self.base_correct, max_drop) and self.p_better < alpha


def compare_paired(base: list[float], new: list[float]) -> PairedComparison:
    """Right (1) or wrong (0) per question, or a metric's value in [0, 1], in both runs."""
    if len(base) != len(new):
        raise ValueError("paired comparison needs the same questions in both runs")
    lost = sum(w < b - TIE for b, w in zip(base, new))
    gained = sum(w > b + TIE for b, w in zip(base, new))
    return PairedComparison(len(base), sum(base), sum(new), lost, gained)
