"""Estimates with 95% intervals over users (the delta method), and lifts between two groups.

Every metric is a ratio of per-user sums, `R = Σ y_u / Σ x_u` (CTR: clicks over impressions; a
per-user mean has x_u = 1). Users, not impressions, are the independent units: a user who sees 200
items and clicks none is one observation, so heavy users do not shrink the interval as if their
impressions were independent. The delta method gives

    Var(R) ≈ (s_y² − 2 R s_xy + R² s_x²) / (n x̄²)

and for a lift `L = R_t / R_c − 1` between independent groups
`Var(R_t / R_c) ≈ (R_t / R_c)² (Var(R_t) / R_t² + Var(R_c) / R_c²)`
(Deng, Knoblich and Lu, "Applying the Delta Method in Metric Analytics", KDD 2018).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

Z95 = 1.959963984540054


@dataclass(frozen=True)
class Estimate:
    value: float
    variance: float

    @property
    def ci95(self) -> tuple[float, float]:
        half = Z95 * math.sqrt(max(self.variance, 0.0))
        return self.value - half, self.value + half

    def as_dict(self, digits: int = 6) -> dict:
        lo, hi = self.ci95
        return {"value": round(self.value, digits), "ci95": [round(lo, digits), round(hi, digits)]}


def ratio(y: np.ndarray, x: np.ndarray | None = None) -> Estimate | None:
    """Σy / Σx over users (x = 1 per user: the mean of y), with its delta-method variance; None when
    there are no users or Σx is 0."""
    y = np.asarray(y, dtype=np.float64)
    x = np.ones_like(y) if x is None else np.asarray(x, dtype=np.float64)
    n = len(y)
    if n == 0 or x.sum() <= 0:
        return None
    mean_x, mean_y = x.mean(), y.mean()
    value = mean_y / mean_x
    if n < 2:
        return Estimate(float(value), math.inf)
    cov = np.cov(np.vstack([y, x]), ddof=1)
    var = (cov[0, 0] - 2 * value * cov[0, 1] + value * value * cov[1, 1]) / (n * mean_x * mean_x)
    return Estimate(float(value), float(max(var, 0.0)))


def lift(treatment: Estimate | None, control: Estimate | None) -> Estimate | None:
    """Relative lift treatment / control − 1 of two independent groups; None without a positive control."""
    if treatment is None or control is None or control.value <= 0:
        return None
    r = treatment.value / control.value
    rel_t = treatment.variance / treatment.value ** 2 if treatment.value > 0 else math.inf
    rel_c = control.variance / control.value ** 2
    if treatment.value == 0:  # all-zero treatment: the interval comes from the control alone
        rel_t = 0.0
    return Estimate(r - 1.0, r * r * (rel_t + rel_c))


def lift_dict(treatment: Estimate | None, control: Estimate | None) -> dict | None:
    """{"value", "ci95", "significant"} of a lift, or None when it is not defined."""
    found = lift(treatment, control)
    if found is None or not math.isfinite(found.variance):
        return None
    lo, hi = found.ci95
    return {**found.as_dict(), "significant": bool(lo > 0 or hi < 0)}
