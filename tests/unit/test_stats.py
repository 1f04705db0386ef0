"""The regression gate's statistics: exact McNemar, checked against theory by simulation."""

from __future__ import annotations

from math import comb

import numpy as np
import pytest

from pytest_mmlu.stats import binom_tail, compare_paired


def test_binomial_tail_exact_values():
    assert binom_tail(0, 10) == 1.0
    assert binom_tail(10, 10) == 1 / 1024
    assert binom_tail(8, 10) == pytest.approx((45 + 10 + 1) / 1024)
    assert binom_tail(31, 45) == pytest.approx(sum(comb(45, i) for i in range(31, 46)) / 2**45)
    assert binom_tail(3, 2) == 0.0


def test_paired_counts():
    c = compare_paired([True, True, False, False, True], [False, True, True, False, False])
    assert (c.n, c.lost, c.gained, c.base_correct, c.new_correct) == (5, 2, 1, 3, 2)
    assert c.drop == pytest.approx(0.2)


def simulate(n, p_base, p_lost, p_gained, trials, rng):
    """Paired outcomes: each right answer is lost with p_lost, each wrong one gained with p_gained."""
    base = rng.random((trials, n)) < p_base
    flip = rng.random((trials, n))
    new = np.where(base, flip >= p_lost, flip < p_gained)
    lost = (base & ~new).sum(1)
    gained = (~base & new).sum(1)
    return base.sum(1), new.sum(1), lost, gained


def gate_fails(base, new, lost, gained, n, max_drop, alpha):
    out = []
    for b, w, lo, ga in zip(base, new, lost, gained):
        drop = (b - w) / n
        out.append(drop > max_drop and binom_tail(int(lo), int(lo + ga)) < alpha)
    return np.array(out)


@pytest.mark.parametrize("alpha", [0.05, 0.01])
def test_false_alarm_rate_is_at_most_alpha(alpha):
    """Same model quality (flips equally likely both ways): the gate fails at most alpha of the time."""
    rng = np.random.default_rng(0)
    n, trials = 400, 4000
    # Discordance with equal marginal accuracy: lost rate x p_base == gained rate x (1 - p_base).
    p_base, p_lost = 0.6, 0.05
    p_gained = p_lost * p_base / (1 - p_base)
    fails = gate_fails(*simulate(n, p_base, p_lost, p_gained, trials, rng), n, max_drop=0.0, alpha=alpha)
    # The exact test is conservative; allow 3 binomial standard errors of simulation noise.
    assert fails.mean() <= alpha + 3 * np.sqrt(alpha * (1 - alpha) / trials)


def power_theory(n, p_base, p_lost, p_gained, alpha):
    """P(McNemar p < alpha) when each question is independently lost (q1) or gained (q2)."""
    q1, q2 = p_base * p_lost, (1 - p_base) * p_gained
    d = q1 + q2
    total = 0.0
    for m in range(n + 1):  # m discordant questions
        pm = comb(n, m) * d**m * (1 - d) ** (n - m)
        if pm < 1e-15:
            continue
        r = q1 / d
        total += pm * sum(comb(m, k) * r**k * (1 - r) ** (m - k) for k in range(m + 1) if binom_tail(k, m) < alpha)
    return total


def test_power_matches_theory():
    """A real drop (lost 3x as likely as gained): simulated power equals the exact theoretical power."""
    rng = np.random.default_rng(1)
    n, trials, alpha = 400, 3000, 0.05
    p_base, p_lost, p_gained = 0.6, 0.06, 0.04  # q1 = 0.036 lost, q2 = 0.016 gained per question
    sim = gate_fails(*simulate(n, p_base, p_lost, p_gained, trials, rng), n, max_drop=0.0, alpha=alpha).mean()
    theory = power_theory(n, p_base, p_lost, p_gained, alpha)
    assert 0.3 < theory < 0.9  # a regime where power is informative
    assert abs(sim - theory) < 3 * np.sqrt(theory * (1 - theory) / trials)


def test_max_drop_guards_small_but_significant_drops():
    c = compare_paired([True] * 1000 + [False] * 1000, [True] * 985 + [False] * 1015)
    assert c.p_worse < 0.001 and c.drop == pytest.approx(0.0075)
    assert not c.regressed(max_drop=0.02, alpha=0.05)
    assert c.regressed(max_drop=0.005, alpha=0.05)


def test_a_drop_of_exactly_max_drop_is_not_more_than_it():
    """11/20 -> 6/20 drops by 0.25 exactly; as floats 0.55 - 0.30 = 0.25000000000000006."""
    from pytest_mmlu.stats import compare_paired

    base = [i < 11 for i in range(20)]
    new = [i < 6 for i in range(20)]
    assert compare_paired(base, new).p_worse < 0.05  # significant: only the size decides
    assert not compare_paired(base, new).regressed(0.25, 0.05)
    assert not compare_paired(new, base).improved(0.25, 0.05)
    assert compare_paired(base, new).regressed(0.249, 0.05)
    assert compare_paired(base, [i < 5 for i in range(20)]).regressed(0.25, 0.05)
