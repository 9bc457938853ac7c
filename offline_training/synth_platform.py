"""A synthetic super-app platform: several malls sharing one user base, with known interests.

The lookalike benchmark (`bench/audience_bench.py`) and tests need what one mall (`synth.py`) cannot
give: the same people shopping in several merchants' mini-programs, a platform profile with consent
scopes (including `marketing`), and each person's true interests to judge an audience against.

Users come from the mall generator's own demographic model (`synth._users`: demographics → 1-3 main
interests from a demographic prior → the platform's noisy copy of them), so the two generators agree
on who likes what. Each mall sells a few top categories (`MALLS`; `general` sells everything); each
user opens a random subset of the malls. Activity per user is log-normal and independent of interests,
so "the most active platform users" is a fair, not a rigged, baseline. An engagement picks a category
from the user's interest weights (10% at random), then one of the user's malls that sells it (none:
the engagement happens off-platform and leaves no event), then runs a view → click → purchase funnel
where interest raises the click rate, as in `synth.py`.

Outputs (DataFrames, or Parquet files with `write_platform`):
- `profiles`: user_id, consent (`basic|location|interests|marketing` subsets), age_band, gender,
  occupation, city_tier, region, interests (the platform's noisy view);
- `events`: app_id, user_id, type (view / click / purchase), category (`top/sub`), ts;
- `truth`: user_id, interests (true main interests, `|`-separated), activity (expected engagements);
- `malls`: app_id, categories.
One seed gives identical frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from offline_training.synth import (AGE_BANDS, CATALOG, CLICK_P, EXPLORE, OCCUPATIONS, REGIONS, SCOPES, START_TS,
                                    TOPS, _users)
from recsys.schema import LIST_SEP

#: Mall (app id) → the top categories it sells.
MALLS: dict[str, tuple[str, ...]] = {
    "beauty": ("美妆", "服饰"), "baby": ("母婴",), "digital": ("数码", "家电"), "grocery": ("食品", "生鲜"),
    "pets": ("宠物",), "sports": ("运动", "医药健康"), "general": TOPS,
}
#: Share of users who granted the `marketing` scope (independent of the other scopes).
MARKETING_P = 0.6
#: Chance a user has opened a given mall (the general mall: GENERAL_P).
MALL_P, GENERAL_P = 0.35, 0.5
BUY_P = 0.12  # purchase given click
DAYS = 60


@dataclass
class SynthPlatform:
    """The frames of one synthetic platform (see the module docstring)."""

    profiles: pd.DataFrame
    events: pd.DataFrame
    truth: pd.DataFrame
    malls: pd.DataFrame

    def interested(self, category: str) -> set[str]:
        """Users whose true main interests include the top category `category`."""
        has = self.truth["interests"].str.split(LIST_SEP).map(lambda cats: category in cats)
        return set(self.truth.loc[has.to_numpy(dtype=bool), "user_id"])


def generate_platform(users: int = 20_000, engagements: float = 30.0, seed: int = 0) -> SynthPlatform:
    """A platform of `users` people, each with about `engagements` engagements on average (log-normal)."""
    if users < 100:
        raise ValueError(f"users must be >= 100, got {users}")
    if engagements <= 0:
        raise ValueError(f"engagements must be > 0, got {engagements}")
    rng = np.random.default_rng([seed, 22])
    u = _users(rng, users)
    n, c = users, len(TOPS)
    uids = np.array([f"p{i:07d}" for i in range(n)], dtype=object)
    # heavy-tailed activity, independent of what people like
    activity = engagements * rng.lognormal(-0.5, 1.0, n)
    names = list(MALLS)
    opened = rng.random((n, len(names))) < np.array([GENERAL_P if m == "general" else MALL_P for m in names])
    sells = np.array([[t in MALLS[m] for t in TOPS] for m in names])  # malls × categories

    who = np.repeat(np.arange(n), rng.poisson(activity))
    w = u["weights"][who]
    cat = (w.cumsum(axis=1) < rng.random((len(who), 1)) * w.sum(axis=1, keepdims=True)).sum(axis=1)
    cat = np.where(rng.random(len(who)) < EXPLORE, rng.integers(0, c, len(who)), np.minimum(cat, c - 1))
    # one of the user's malls selling the category, at random; none → off-platform, no event
    able = opened[who] & sells[:, cat].T
    pick = np.where(able, rng.random(able.shape), -1.0).argmax(axis=1)
    keep = able.any(axis=1)
    who, cat, mall = who[keep], cat[keep], pick[keep]
    match = u["main"][who, cat]
    click = rng.random(len(who)) < np.where(match, CLICK_P[1], CLICK_P[0])
    buy = click & (rng.random(len(who)) < BUY_P)
    ts = START_TS + rng.integers(0, DAYS * 86400, len(who))
    subs = {t: list(CATALOG[t][3]) for t in TOPS}
    sub = np.array([f"{TOPS[k]}/{subs[TOPS[k]][r % len(subs[TOPS[k]])]}"
                    for k, r in zip(cat.tolist(), rng.integers(0, 1000, len(cat)).tolist())], dtype=object)
    rows = [(who, "view", ts), (who[click], "click", ts[click] + 20), (who[buy], "purchase", ts[buy] + 300)]
    masks = [np.ones(len(who), bool), click, buy]
    events = pd.concat([pd.DataFrame({
        "app_id": np.array(names, dtype=object)[mall[m]], "user_id": uids[w_], "type": kind,
        "category": sub[m], "ts": t}) for (w_, kind, t), m in zip(rows, masks)], ignore_index=True)
    events = events.sort_values(["ts", "user_id"], kind="stable", ignore_index=True)

    scopes = list(SCOPES) + ["marketing"]
    granted = np.column_stack([u["consent"], rng.random(n) < MARKETING_P])
    profiles = pd.DataFrame({
        "user_id": uids,
        "consent": [LIST_SEP.join(s for s, g in zip(scopes, row) if g) for row in granted.tolist()],
        "age_band": np.array(AGE_BANDS, dtype=object)[u["age"]],
        "gender": np.where(u["female"], "F", "M").astype(object),
        "occupation": np.array(OCCUPATIONS, dtype=object)[u["occupation"]],
        "city_tier": u["city_tier"].astype(str).astype(object),
        "region": np.array(REGIONS, dtype=object)[u["region"]],
        "interests": [LIST_SEP.join(TOPS[j] for j in row if j >= 0) for row in u["platform"].tolist()],
    })
    truth = pd.DataFrame({"user_id": uids, "interests": [LIST_SEP.join(TOPS[j] for j in row if j >= 0)
                                                         for row in u["truth"].tolist()],
                          "activity": activity.round(3)})
    malls = pd.DataFrame({"app_id": names, "categories": [LIST_SEP.join(MALLS[m]) for m in names]})
    return SynthPlatform(profiles, events, truth, malls)


def write_platform(platform: SynthPlatform, out: str | Path) -> dict[str, int]:
    """Write the frames as Parquet files (profiles, events, truth, malls) into `out`; rows per file."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name in ("profiles", "events", "truth", "malls"):
        frame: pd.DataFrame = getattr(platform, name)
        frame.to_parquet(folder / f"{name}.parquet", index=False)
        counts[name] = len(frame)
    return counts
