"""What a no-regression gate can see: the smallest accuracy drop its McNemar test detects.

Model (the one ``tests/unit/test_stats.py`` simulates): each of ``n`` paired questions is,
independently, discordant with probability ``d`` (the discordance rate: lost or gained
between baseline and candidate), and a true drop ``delta`` means lost with probability
``(d + delta) / 2`` and gained with ``(d - delta) / 2``. The gate's test rejects when
``P(Binomial(D, 1/2) >= lost) < alpha`` (``stats.binom_tail``), D the discordant count.

The power at ``delta`` is exact: a sum over D of P(D) * P(lost >= c(D) | D), with c(D) the
smallest lost count that is significant among D discordant questions. The minimum
detectable drop is the smallest ``delta`` whose power reaches 80%; a drop cannot exceed
the discordance, so ``d`` is taken as at least ``delta`` (the most favourable case when the
comparison saw few discordant questions). ``tests/unit/test_power.py`` checks it by simulation.

numpy only, and imported when a no-regression row is written: never at plugin load.
"""

from __future__ import annotations

import math
from functools import cache

POWER = 0.80
_TAIL_SDS = 10.0  # discordant counts beyond mean +- 10 sd carry under 1e-20 of the probability


def detectable_drop(n: int, alpha: float, discordance: float, power: float = POWER) -> float | None:
    """Smallest true accuracy drop the exact one-sided McNemar test at ``alpha`` detects with
    probability ``power`` on ``n`` paired questions; None when no drop up to 1.0 is."""
    if n <= 0:
        return None
    if power_at(n, alpha, discordance, 1.0) < power:
        return None
    lo, hi = 0.0, 1.0
    for _ in range(30):  # 1e-9 resolution, far below one question in n
        mid = (lo + hi) / 2
        if power_at(n, alpha, discordance, mid) >= power:
            hi = mid
        else:
            lo = mid
    return hi


def power_at(n: int, alpha: float, discordance: float, drop: float) -> float:
    """P(the test rejects) when the true drop is ``drop`` (exact, see the module docstring)."""
    d = min(1.0, max(discordance, drop))
    if d <= 0.0:
        return 0.0  # no discordant question: nothing can be significant
    q = min(1.0, (d + max(drop, 0.0)) / (2 * d))  # P(lost | discordant)
    counts, weights = _discordant_counts(n, d)
    total = 0.0
    for count, weight in zip(counts.tolist(), weights.tolist()):
        c = _critical(count, alpha)
        if c is not None and weight > 0.0:
            total += weight * _upper_tail(count, q, c)
    return float(min(1.0, total))


def _discordant_counts(n: int, d: float):
    """The discordant counts D worth summing over and their Binomial(n, d) probabilities."""
    import numpy as np

    if d >= 1.0:
        return np.array([n]), np.array([1.0])
    sd = math.sqrt(n * d * (1 - d))
    lo = max(0, int(n * d - _TAIL_SDS * sd) - 1)
    hi = min(n, int(n * d + _TAIL_SDS * sd) + 2)
    ks = np.arange(lo, hi + 1)
    return ks, np.exp(_log_binom(n, ks) + ks * math.log(d) + (n - ks) * math.log1p(-d))


@cache
def _critical(count: int, alpha: float) -> int | None:
    """Smallest k with P(Binomial(count, 1/2) >= k) < alpha, or None when none is."""
    import numpy as np

    if count == 0:
        return None
    ks = np.arange(count + 1)
    pmf = np.exp(_log_binom(count, ks) - count * math.log(2.0))
    tails = np.cumsum(pmf[::-1])[::-1]  # tails[k] = P(X >= k)
    below = np.nonzero(tails < alpha)[0]
    return int(below[0]) if below.size else None


def _upper_tail(count: int, q: float, k: int) -> float:
    """P(Binomial(count, q) >= k)."""
    import numpy as np

    if k > count:
        return 0.0
    if q >= 1.0:
        return 1.0
    ks = np.arange(k, count + 1)
    return float(np.exp(_log_binom(count, ks) + ks * math.log(q) + (count - ks) * math.log1p(-q)).sum())


@cache
def _log_factorials(size: int):
    """log k! for k < size (a pure function of size: one table per power of two)."""
    import numpy as np

    return np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, size, dtype=np.float64)))])


def _log_binom(n: int, ks):
    """log C(n, k) for an array of k, from a table of log-factorials."""
    table = _log_factorials(max(1024, 1 << n.bit_length()))  # longer than n
    return table[n] - table[ks] - table[n - ks]
