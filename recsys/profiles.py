"""Merged user profile → feature keys, the same for training (batch) and serving (one user).

A feature key is `<namespace>.<column>=<value>`: namespace `m` for the merchant's profile, `p` for the
platform's. A platform column is used only when the user's `consent` lists the column's scope (or
`all`); multi-valued cells (`数码|食品`) give one key per value. Keys are also the segments of
segment popularity, so "popular with p.age_band=25-34" is both a feature and an explanation.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.schema import LIST_SEP
from recsys.matrix import IdMap

MERCHANT_NS = "m"
PLATFORM_NS = "p"
_SKIP = {"user_id", "consent"}


def _column_scopes(scopes: Mapping[str, tuple[str, ...]]) -> dict[str, str]:
    return {col: scope for scope, cols in scopes.items() for col in cols}


def allowed_platform_columns(consent: str, columns: list[str], scopes: Mapping[str, tuple[str, ...]]) -> list[str]:
    """Platform columns this user's consent lets the merchant use."""
    granted = {s.strip() for s in str(consent).split(LIST_SEP)}
    owner = _column_scopes(scopes)
    return [c for c in columns if c in owner and ("all" in granted or owner[c] in granted)]


def _keys(ns: str, column: str, cell: object) -> list[str]:
    text = "" if cell is None else str(cell).strip()
    if not text:
        return []
    return [f"{ns}.{column}={v.strip()}" for v in text.split(LIST_SEP) if v.strip()]


def profile_keys(merchant: Mapping[str, object] | None, platform: Mapping[str, object] | None,
                 scopes: Mapping[str, tuple[str, ...]]) -> list[str]:
    """Feature keys of one user from their merchant and platform profiles (either may be None)."""
    keys: list[str] = []
    for column, cell in (merchant or {}).items():
        if column not in _SKIP:
            keys += _keys(MERCHANT_NS, column, cell)
    if platform:
        columns = [c for c in platform if c not in _SKIP]
        for column in allowed_platform_columns(str(platform.get("consent", "")), columns, scopes):
            keys += _keys(PLATFORM_NS, column, platform[column])
    return list(dict.fromkeys(keys))


def _melt(frame: pd.DataFrame, ns: str, columns: list[str]) -> pd.DataFrame:
    if not columns or frame.empty:
        return pd.DataFrame({"user_id": [], "key": []})
    long = frame[["user_id", *columns]].melt(id_vars="user_id", var_name="column", value_name="cell")
    long["cell"] = long["cell"].astype(str).str.strip()
    long = long[long["cell"] != ""]
    long["cell"] = long["cell"].str.split(LIST_SEP)
    long = long.explode("cell")
    long["cell"] = long["cell"].str.strip()
    long = long[long["cell"] != ""]
    return pd.DataFrame({"user_id": long["user_id"].to_numpy(),
                         "key": (ns + "." + long["column"] + "=" + long["cell"]).to_numpy()})


def profile_key_table(merchant: pd.DataFrame, platform: pd.DataFrame,
                      scopes: Mapping[str, tuple[str, ...]]) -> pd.DataFrame:
    """(user_id, key) rows for every user with a profile; vectorized `profile_keys`."""
    parts = [_melt(merchant, MERCHANT_NS, [c for c in merchant.columns if c not in _SKIP])]
    owner = _column_scopes(scopes)
    granted = platform["consent"].astype(str).str.split(LIST_SEP) if not platform.empty else pd.Series([], dtype=object)
    for column in [c for c in platform.columns if c not in _SKIP and c in owner]:
        scope = owner[column]
        ok = granted.map(lambda g, s=scope: s in g or "all" in g).to_numpy(dtype=bool)
        parts.append(_melt(platform.loc[ok], PLATFORM_NS, [column]))
    table = pd.concat(parts, ignore_index=True)
    return table.drop_duplicates(ignore_index=True)


def feature_matrix(users: IdMap, key_table: pd.DataFrame, vocab: IdMap | None = None) -> tuple[sp.csr_matrix, IdMap]:
    """Users × feature keys (1 where the user has the key); builds the vocabulary unless given."""
    if vocab is None:
        vocab = IdMap.of(sorted(key_table["key"].unique()))
    rows = users.lookup(key_table["user_id"])
    cols = vocab.lookup(key_table["key"])
    keep = (rows >= 0) & (cols >= 0)
    data = np.ones(int(keep.sum()), dtype=np.float32)
    matrix = sp.csr_matrix((data, (rows[keep], cols[keep])), shape=(len(users), len(vocab)))
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix, vocab
