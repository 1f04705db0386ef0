"""Paired comparison of two runs on the same questions: the exact McNemar test.

Only the discordant questions carry information about a difference: ``lost``
(right before, wrong now) and ``gained`` (wrong before, right now).  Under the
null hypothesis of no difference each discordant question is lost or gained
with probability 1/2, so ``lost ~ Binomial(lost + gained, 1/2)``; the one-sided
p-value for "worse now" is P(X >= lost).

A metric with values between 0 and 1 per question (an lm-eval task's ``mc2``), or questions
that do not weigh the same (a group of lm-eval tasks averaged task by task), is compared by
the paired sign-flip permutation test of the (weighted) mean difference: under no difference
each question's change is as likely to have the other sign. It is exact over every sign
pattern up to ``EXACT_UP_TO`` changed questions, else estimated from ``DRAWS`` seeded draws.
``lost``/``gained`` count the questions whose value fell or rose; values within ``TIE`` of
each other are one value (two fp32 runs of a model differ in the last digits).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from math import comb

TIE = 1e-6  # a metric's values this close are one value (0/1 values are never this close)
EXACT_UP_TO = 16  # changed questions: every one of the 2**16 sign patterns is counted
DRAWS = 20_000  # beyond: seeded random sign patterns (p-value standard error below 0.0035)


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
    base_correct: float  # right answers, or the (weighted) sum of the values
    new_correct: float
    lost: int
    gained: int
    test: str = "McNemar"
    permutation_p: tuple[float, float] | None = None  # (worse, better) of the permutation test

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
        """One-sided p-value for 'the new run is worse' (exact McNemar, or the permutation test's)."""
        if self.permutation_p is not None:
            return self.permutation_p[0]
        return binom_tail(self.lost, self.lost + self.gained)

    @property
    def p_better(self) -> float:
        if self.permutation_p is not None:
            return self.permutation_p[1]
        return binom_tail(self.gained, self.lost + self.gained)

    def _beyond(self, change: float, max_drop: float) -> bool:
        """change / n > max_drop, exactly: ``max_drop`` as the decimal written (0.02 is 1/50),
        never a float subtraction that lands a hair above it (0.55 - 0.30 > 0.25)."""
        return self.n > 0 and Fraction(change) / self.n > Fraction(repr(max_drop))

    def regressed(self, max_drop: float, alpha: float) -> bool:
        return self._beyond(self.base_correct - self.new_correct, max_drop) and self.p_worse < alpha

    def improved(self, max_drop: float, alpha: float) -> bool:
        return self._beyond(self.new_correct - self.base_correct, max_drop) and self.p_better < alpha


def compare_paired(base: list[float], new: list[float], weights: list[float] | None = None) -> PairedComparison:
    """Right (1) or wrong (0) per question, or a metric's value in [0, 1], in both runs;
    ``weights``: each question's weight (mean 1), None: all alike."""
    if len(base) != len(new) or (weights is not None and len(weights) != len(base)):
        raise ValueError("paired comparison needs the same questions in both runs")
    lost = sum(w < b - TIE for b, w in zip(base, new))
    gained = sum(w > b + TIE for b, w in zip(base, new))
    if weights is None and all(v in (0, 1) for v in (*base, *new)):
        return PairedComparison(len(base), sum(base), sum(new), lost, gained)
    weights = weights or [1.0] * len(base)
    drops = [wt * (b - w) for b, w, wt in zip(base, new, weights) if abs(b - w) > TIE]
    return PairedComparison(
        len(base),
        sum(wt * b for b, wt in zip(base, weights)),
        sum(wt * w for w, wt in zip(new, weights)),
        lost,
        gained,
        "sign-flip permutation",
        sign_flip_p(drops),
    )


def sign_flip_p(drops: list[float]) -> tuple[float, float]:
    """One-sided p-values (worse, better) of the sum of ``drops`` (a question's base value less
    its new one) under random signs: the share of sign patterns whose sum is at least (at most)
    the observed one."""
    import numpy as np

    if not drops:
        return 1.0, 1.0
    size = np.abs(np.asarray(drops, dtype=np.float64))
    observed = float(np.sum(drops))
    slack = TIE * len(drops)  # sums equal up to rounding count as reached
    if len(drops) <= EXACT_UP_TO:
        patterns = ((np.arange(2 ** len(drops))[:, None] >> np.arange(len(drops))) & 1) * 2 - 1
        sums = patterns @ size
        return float(np.mean(sums >= observed - slack)), float(np.mean(sums <= observed + slack))
    rng = np.random.default_rng(0)  # seeded: the same comparison gives the same verdict
    worse = better = 0
    for start in range(0, DRAWS, 2000):
        sums = (rng.integers(0, 2, size=(min(2000, DRAWS - start), len(drops))) * 2 - 1) @ size
        worse += int(np.sum(sums >= observed - slack))
        better += int(np.sum(sums <= observed + slack))
    return (worse + 1) / (DRAWS + 1), (better + 1) / (DRAWS + 1)
