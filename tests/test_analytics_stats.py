"""The statistics of the analytics: intervals that cover the truth as often as they claim, A/A runs
that find nothing in about 95% of repeats, and a real lift that is found."""

from __future__ import annotations

import numpy as np
import pytest

from analytics.stats import lift, lift_dict, ratio
from vocab.experiments import bucket


def _users(rng: np.random.Generator, n: int, ctr_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Heavy-tailed users: impressions per user geometric (a few see hundreds), each user's own CTR
    from a Beta, purchases with a log-normal amount — the shape that breaks per-impression statistics."""
    impressions = rng.geometric(1 / 25, n)
    rate = np.clip(rng.beta(1.2, 12, n) * ctr_scale, 0, 1)
    clicks = rng.binomial(impressions, rate)
    gmv = rng.binomial(clicks, 0.2) * rng.lognormal(4.0, 1.0, n)
    return impressions.astype(float), clicks.astype(float), gmv


def _split(n: int, name: str) -> np.ndarray:
    """True for users in the second half of experiment `name` (the serving hash)."""
    return np.array([bucket(name, f"u{u}") >= 0.5 for u in range(n)])


def test_a_a_runs_find_no_lift_in_about_95_percent_of_repeats() -> None:
    rng = np.random.default_rng(11)
    runs, n = 400, 2000
    covered = {"ctr": 0, "gmv_per_user": 0}
    for run in range(runs):
        impressions, clicks, gmv = _users(rng, n)
        b = _split(n, f"aa-{run}")
        found = {"ctr": lift(ratio(clicks[b], impressions[b]), ratio(clicks[~b], impressions[~b])),
                 "gmv_per_user": lift(ratio(gmv[b]), ratio(gmv[~b]))}
        for metric, estimate in found.items():
            lo, hi = estimate.ci95
            covered[metric] += lo <= 0 <= hi
    for metric, count in covered.items():
        # 95% nominal; with 400 runs the binomial sd is 1.1 points: 0.92..0.98 is about ±3 sd
        assert 0.92 <= count / runs <= 0.98, (metric, count / runs)


def test_the_interval_of_a_ratio_covers_the_true_ctr() -> None:
    rng = np.random.default_rng(3)
    truth_impressions, truth_clicks, _ = _users(rng, 2_000_000)
    truth = truth_clicks.sum() / truth_impressions.sum()
    hits = 0
    for _ in range(300):
        sample = rng.integers(0, len(truth_clicks), 1500)
        lo, hi = ratio(truth_clicks[sample], truth_impressions[sample]).ci95
        hits += lo <= truth <= hi
    assert 0.91 <= hits / 300 <= 0.99


def test_a_real_lift_is_found_with_its_size() -> None:
    rng = np.random.default_rng(5)
    base = _users(rng, 3000)
    better = _users(rng, 3000, ctr_scale=1.25)
    found = lift_dict(ratio(better[1], better[0]), ratio(base[1], base[0]))
    assert found["significant"]
    assert found["ci95"][0] < 0.25 < found["ci95"][1]


def test_degenerate_groups_give_no_estimate_rather_than_nonsense() -> None:
    assert ratio(np.array([])) is None
    assert ratio(np.array([1.0, 2.0]), np.array([0.0, 0.0])) is None
    assert lift(ratio(np.array([1.0, 2.0])), ratio(np.array([0.0, 0.0]))) is None
    assert lift_dict(ratio(np.array([1.0])), ratio(np.array([2.0, 3.0]))) is None  # one user: no interval
    assert ratio(np.array([2.0, 4.0])).value == pytest.approx(3.0)
