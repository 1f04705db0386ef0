"""What a no-regression gate can see: the minimum detectable drop at 80% power, checked by
simulating the gate's own McNemar test."""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest

from pytest_mmlu.markers import NoRegression
from pytest_mmlu.power import detectable_drop, power_at
from pytest_mmlu.regression import sensitivity, sensitivity_text
from pytest_mmlu.stats import binom_tail

TRIALS = 20_000  # Monte Carlo standard error of a power near 0.8: 0.0028


@cache
def significant(lost: int, discordant: int, alpha: float) -> bool:
    return binom_tail(lost, discordant) < alpha  # the gate's test (stats.PairedComparison.p_worse)


def simulated_power(n: int, alpha: float, discordance: float, drop: float, seed: int) -> float:
    """Paired runs: each question lost with (d+drop)/2, gained with (d-drop)/2, else unchanged."""
    d = max(discordance, drop)
    p_lost, p_gained = (d + drop) / 2, (d - drop) / 2
    counts = np.random.default_rng(seed).multinomial(n, [p_lost, p_gained, 1 - p_lost - p_gained], size=TRIALS)
    return float(np.mean([significant(int(lo), int(lo + ga), alpha) for lo, ga, _ in counts]))


@pytest.mark.parametrize(
    "n, alpha, discordance", [(60, 0.05, 0.10), (400, 0.05, 0.15), (1000, 0.01, 0.25), (200, 0.05, 0.0)]
)
def test_detectable_drop_has_80_percent_power_by_simulation(n, alpha, discordance):
    drop = detectable_drop(n, alpha, discordance)
    assert drop is not None and 0 < drop < 1
    assert power_at(n, alpha, discordance, drop) == pytest.approx(0.80, abs=1e-6)
    at = simulated_power(n, alpha, discordance, drop, seed=n)
    assert abs(at - 0.80) < 4 * (0.8 * 0.2 / TRIALS) ** 0.5, at
    # A clearly smaller drop is detected clearly less often: the figure is the smallest.
    smaller = simulated_power(n, alpha, discordance, 0.75 * drop, seed=n + 1)
    assert smaller < 0.75, smaller
    # And the exact power matches the simulation away from 80% too.
    assert power_at(n, alpha, discordance, 0.75 * drop) == pytest.approx(smaller, abs=4 * (0.25 / TRIALS) ** 0.5)


def test_more_questions_see_smaller_drops_and_tiny_gates_see_none():
    drops = [detectable_drop(n, 0.05, 0.1) for n in (60, 240, 960, 14042)]
    assert drops == sorted(drops, reverse=True)
    assert drops[-1] < 0.02 < drops[0]
    assert detectable_drop(3, 0.05, 0.5) is None  # 3 questions cannot reach p < 0.05


def test_the_gate_flags_itself_when_too_small_for_its_max_drop():
    small = sensitivity(60, 6, NoRegression(max_drop=0.02, alpha=0.05))
    assert small["too_small"] and small["detectable_drop"] > 0.02
    assert "TOO SMALL for its max_drop 0.020" in sensitivity_text({**small, "n": 60})
    large = sensitivity(14042, 1400, NoRegression(max_drop=0.02, alpha=0.05))
    assert not large["too_small"] and large["detectable_drop"] < 0.02
    assert "TOO SMALL" not in sensitivity_text({**large, "n": 14042})
    assert sensitivity_text({**large, "n": 14042}).startswith(
        f"detects drops >= {large['detectable_drop']:.3f} at 80% power (n=14042, alpha 0.05"
    )
