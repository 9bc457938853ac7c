"""Profile-neighbour popularity: what users with a profile like yours interacted with.

For a first-time visitor u, every training user v gets a weight
    w(u, v) = [ Π_categorical (1 + w_f · [u_f = v_f]) · Π_numeric exp(−½ ((u_f − v_f) / h_f)²) ] ^ p
and items are scored by the weighted share of those users who interacted with them. Numeric fields
are values like `25-34`, `56+` or `3` (compared by their midpoints, so neighbouring age bands still
count); others must match exactly. Training users are grouped by their profile signature, so a
request costs one weight per distinct signature and one sparse product.

On MovieLens-100K cold-start users this beats segment popularity (sum of per-segment log-odds) and a
LightFM model with demographic features; see README "Quality".
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.bundle import Bundle, BundleWriter
from recsys.matrix import IdMap

_NUMERIC = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:-\s*(\d+(?:\.\d+)?)|\+)?\s*$")


def midpoint(value: str) -> float:
    """`25-34` → 29.5, `56+` → 56, `3` → 3; NaN if not numeric."""
    match = _NUMERIC.match(value)
    if not match:
        return float("nan")
    low = float(match.group(1))
    return (low + float(match.group(2))) / 2 if match.group(2) else low


def field_of(key: str) -> str:
    """`p.age_band=25-34` → `p.age_band`."""
    return key.split("=", 1)[0]


@dataclass
class ProfileKernel:
    fields: list[str]
    #: [n_fields] categorical match weight w_f (unused for numeric fields).
    weights: np.ndarray
    #: [n_fields] bandwidth h_f of numeric fields; NaN marks a categorical field.
    bandwidths: np.ndarray
    power: float
    #: Per field, the value of each signature: [n_fields, n_signatures] ids into `values[f]`, -1 = missing.
    signature_values: np.ndarray
    values: list[IdMap]
    #: [n_signatures, n_items] interactions summed over the users of each signature, and their counts.
    signature_items: sp.csr_matrix
    signature_users: np.ndarray

    @classmethod
    def fit(cls, key_table: pd.DataFrame, users: IdMap, user_items: sp.csr_matrix, fields: Sequence[str],
            weights: dict[str, float], power: float, bandwidth_scale: float, binary: bool = True) -> "ProfileKernel":
        """Group training users by their values of `fields` and sum their interactions: binary, or as
        given in [0, 1] (`binary=False`: engagements fading with time, see `fit.kernel_interactions`)."""
        fields = list(fields)
        table = key_table[key_table["user_id"].isin(users.index)]
        keys = table["key"].astype(str)  # an empty table (a data set without profiles) has no str dtype
        table = table.assign(field=keys.map(field_of), value=keys.str.split("=", n=1).str[1])
        table = table[table["field"].isin(fields)].drop_duplicates(["user_id", "field"])
        wide = table.pivot(index="user_id", columns="field", values="value").reindex(list(users.ids))
        wide = wide.reindex(columns=fields).fillna("").astype(str)
        # Users with no profile fields all share one signature (the empty one).
        joined = wide.agg("\x1f".join, axis=1) if fields else pd.Series("", index=wide.index)
        signature_ids, uniques = pd.factorize(joined)
        n_sig = len(uniques)
        members = sp.csr_matrix((np.ones(len(users), dtype=np.float32), (signature_ids, np.arange(len(users)))),
                                shape=(n_sig, len(users)))
        engaged = user_items.copy().tocsr()
        if binary:
            engaged.data[:] = 1.0
        sig_items = sp.csr_matrix(members @ engaged, dtype=np.float32)
        first_user = pd.Series(np.arange(len(users))).groupby(signature_ids).first().to_numpy()
        values, sig_values, bandwidths = [], np.full((len(fields), n_sig), -1, dtype=np.int32), []
        for f, name in enumerate(fields):
            column = wide[name].to_numpy()[first_user]
            vocab = IdMap.of(sorted(v for v in set(column) if v))
            values.append(vocab)
            sig_values[f] = [vocab.get(v) if v else -1 for v in column]
            mids = np.array([midpoint(v) for v in vocab.ids])
            numeric = len(mids) > 1 and not np.isnan(mids).any()
            user_mids = np.array([midpoint(v) for v in wide[name] if v])
            bandwidths.append(bandwidth_scale * float(user_mids.std()) if numeric and user_mids.std() > 0 else np.nan)
        return cls(fields, np.array([weights.get(f, 1.0) for f in fields], dtype=np.float64),
                   np.array(bandwidths, dtype=np.float64), power, sig_values, values, sig_items,
                   np.asarray(members.sum(axis=1)).ravel())

    def signature_weights(self, keys: list[str]) -> np.ndarray:
        """Weight of every signature for a user with these profile keys."""
        mine = {field_of(k): k.split("=", 1)[1] for k in keys}
        log_w = np.zeros(self.signature_values.shape[1])
        for f, name in enumerate(self.fields):
            value = mine.get(name)
            if value is None:
                continue
            sig = self.signature_values[f]
            if np.isnan(self.bandwidths[f]):
                vid = self.values[f].get(value)
                if vid is not None:
                    log_w += np.log1p(self.weights[f] * (sig == vid))
                continue
            mine_mid = midpoint(value)
            if np.isnan(mine_mid):
                continue
            mids = self._midpoints(f)[np.maximum(sig, 0)]
            dist = np.where(sig >= 0, (mids - mine_mid) / self.bandwidths[f], 0.0)
            log_w += -0.5 * dist**2
        return np.exp(self.power * (log_w - log_w.max())) * self.signature_users

    def _midpoints(self, f: int) -> np.ndarray:
        """Midpoints of field f's values, cached (the request path asks on every first visit)."""
        cache = self.__dict__.setdefault("_mids", {})
        if f not in cache:
            cache[f] = np.array([midpoint(v) for v in self.values[f].ids])
        return cache[f]

    def scores(self, keys: list[str]) -> np.ndarray:
        """Weighted share of similar users who interacted with each item."""
        w = self.signature_weights(keys)
        per_user = w / np.maximum(self.signature_users, 1)
        return np.asarray(self.signature_items.T @ per_user).ravel() / max(float(w.sum()), 1e-12)

    def save(self, writer: BundleWriter) -> None:
        sig = self.signature_items
        writer.save_json("kernel_meta", {"fields": self.fields, "power": self.power,
                                         "values": [list(v.ids) for v in self.values]})
        writer.save_array("kernel_weights", self.weights)
        writer.save_array("kernel_bandwidths", self.bandwidths)
        writer.save_array("kernel_signature_values", self.signature_values)
        writer.save_array("kernel_signature_users", self.signature_users)
        writer.save_array("kernel_items_indptr", sig.indptr.astype(np.int64))
        writer.save_array("kernel_items_indices", sig.indices.astype(np.int32))
        writer.save_array("kernel_items_data", sig.data.astype(np.float32))

    @classmethod
    def load(cls, bundle: Bundle, n_items: int) -> "ProfileKernel":
        meta = bundle.json("kernel_meta")
        sig_values = bundle.array("kernel_signature_values")
        items = sp.csr_matrix((bundle.array("kernel_items_data"), bundle.array("kernel_items_indices"),
                               bundle.array("kernel_items_indptr")), shape=(sig_values.shape[1], n_items))
        return cls(meta["fields"], bundle.array("kernel_weights"), bundle.array("kernel_bandwidths"),
                   float(meta["power"]), sig_values, [IdMap(tuple(v)) for v in meta["values"]], items,
                   bundle.array("kernel_signature_users"))
