"""Profile-neighbour popularity equals its per-user definition, computed by brute force."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recsys.matrix import IdMap
from recsys.profile_kernel import ProfileKernel, midpoint


def test_midpoints():
    assert midpoint("25-34") == 29.5 and midpoint("56+") == 56 and midpoint("3") == 3
    assert np.isnan(midpoint("gold"))


def test_grouped_scores_equal_the_per_user_formula():
    rng = np.random.default_rng(0)
    n_users, n_items = 60, 25
    ages = rng.choice(["18-24", "25-34", "35-44", "56+"], n_users)
    genders = rng.choice(["F", "M"], n_users)
    levels = rng.choice(["gold", "silver", ""], n_users)
    users = IdMap.of([f"u{i}" for i in range(n_users)])
    rows = [("u%d" % i, f"p.age_band={ages[i]}") for i in range(n_users)]
    rows += [("u%d" % i, f"p.gender={genders[i]}") for i in range(n_users)]
    rows += [("u%d" % i, f"m.member_level={levels[i]}") for i in range(n_users) if levels[i]]
    keys = pd.DataFrame(rows, columns=["user_id", "key"])
    y = sp.csr_matrix((rng.random((n_users, n_items)) < 0.2).astype(np.float32))
    weights = {"p.gender": 2.0, "m.member_level": 0.5}
    kernel = ProfileKernel.fit(keys, users, y, ["m.member_level", "p.age_band", "p.gender"], weights, 1.5, 0.75)

    mids = np.array([midpoint(a) for a in ages])
    h = 0.75 * mids.std()
    me = ["p.age_band=25-34", "p.gender=F", "m.member_level=gold"]
    w = np.exp(-0.5 * ((mids - 29.5) / h) ** 2) * (1 + 2.0 * (genders == "F")) * (1 + 0.5 * (levels == "gold"))
    w = w**1.5
    expected = (w @ y.toarray()) / w.sum()
    assert kernel.scores(me) == pytest.approx(expected, rel=1e-5)
    # a user with no known profile gets plain popularity (share of users per item)
    assert kernel.scores([]) == pytest.approx(y.toarray().mean(axis=0), rel=1e-5)
