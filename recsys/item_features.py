"""Content features of items: category levels, brand, tags, price band and title tokens.

Used by the LightFM hybrid (so an item published after training has a representation) and by
content similarity for related items. The same function serves a batch at training and one item
at serving time.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.schema import CATEGORY_SEP, LIST_SEP
from recsys.matrix import IdMap
from vocab.tokenizer import Tokenizer


def category_levels(path: str) -> list[str]:
    """`数码/手机/配件` → [`数码`, `数码/手机`, `数码/手机/配件`]."""
    parts = [p.strip() for p in str(path).split(CATEGORY_SEP) if p.strip()]
    return [CATEGORY_SEP.join(parts[: i + 1]) for i in range(len(parts))]


def price_band(price: float, edges: Sequence[float]) -> int:
    return bisect.bisect_right(list(edges), float(price))


def content_keys(item: Mapping[str, object], edges: Sequence[float], tokenizer: Tokenizer | None) -> list[str]:
    """Feature keys of one item (without the identity feature)."""
    keys = [f"cat={c}" for c in category_levels(str(item.get("category", "")))]
    brand = str(item.get("brand", "") or "").strip()
    if brand:
        keys.append(f"brand={brand.lower()}")
    keys += [f"tag={t.strip()}" for t in str(item.get("tags", "") or "").split(LIST_SEP) if t.strip()]
    price = item.get("price")
    if price is not None and float(price) > 0:
        keys.append(f"price={price_band(float(price), edges)}")
    if tokenizer is not None:
        keys += [f"tok={t}" for t in dict.fromkeys(tokenizer.tokens(str(item.get("title", ""))))]
    return list(dict.fromkeys(keys))


def catalog_tokenizer(items: pd.DataFrame) -> Tokenizer:
    """A tokenizer that knows the catalog's brands, category names and tags as whole words."""
    words: set[str] = set(items["brand"].astype(str))
    for path in items["category"].astype(str).unique():
        words.update(p for p in path.split(CATEGORY_SEP))
    for tags in items["tags"].astype(str).unique():
        words.update(tags.split(LIST_SEP))
    return Tokenizer(w for w in words if w)


def build_item_features(items: pd.DataFrame, edges: Sequence[float], tokenizer: Tokenizer | None,
                        min_token_items: int, identity: bool) -> tuple[sp.csr_matrix, IdMap, list[list[str]]]:
    """Items × feature keys, rows L1-normalized; returns (matrix, vocabulary, content keys per item).

    Title tokens that fewer than `min_token_items` items share are dropped from the vocabulary.
    """
    records = items.to_dict("records")
    per_item = [content_keys(r, edges, tokenizer) for r in records]
    counts = Counter(k for keys in per_item for k in keys if k.startswith("tok="))
    per_item = [[k for k in keys if not k.startswith("tok=") or counts[k] >= min_token_items] for keys in per_item]
    vocab_keys = sorted({k for keys in per_item for k in keys})
    if identity:
        vocab_keys = [f"id={i}" for i in items["item_id"]] + vocab_keys
    vocab = IdMap.of(vocab_keys)
    return content_matrix(per_item, vocab, items["item_id"].tolist() if identity else None), vocab, per_item


def content_matrix(per_item: list[list[str]], vocab: IdMap, identity_ids: list[str] | None = None) -> sp.csr_matrix:
    """Rows of known feature keys (unknown keys are ignored), L1-normalized as LightFM expects."""
    rows, cols = [], []
    for row, keys in enumerate(per_item):
        idx = [vocab.get(k) for k in keys]
        if identity_ids is not None:
            idx.append(vocab.get(f"id={identity_ids[row]}"))
        idx = [i for i in idx if i is not None]
        rows += [row] * len(idx)
        cols += idx
    data = np.ones(len(rows), dtype=np.float32)
    matrix = sp.csr_matrix((data, (rows, cols)), shape=(len(per_item), len(vocab)))
    return normalize_rows(matrix)


def normalize_rows(matrix: sp.csr_matrix) -> sp.csr_matrix:
    """Scale each row to sum 1 (rows of zeros stay zero)."""
    sums = np.asarray(matrix.sum(axis=1)).ravel()
    scale = np.divide(1.0, sums, out=np.zeros_like(sums, dtype=np.float64), where=sums > 0)
    return sp.csr_matrix(sp.diags(scale.astype(np.float32)) @ matrix)
