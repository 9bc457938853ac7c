"""As-you-type suggestions: a sorted array of prefix keys built once, a binary search per keystroke.

Each suggestion term (a popular query, a brand, a category name, a title's leading words) is
reachable by several keys: its normalized text without spaces, its full pinyin and its pinyin
initials, so "华", "hua", "huawei" and "hw" all reach 华为. The keys of all terms are sorted once;
a prefix selects the contiguous run `[bisect_left(p), bisect_left(p + U+FFFF))` and only that run's
weights are ranked (a partial sort when the run is long), so a keystroke never scans every term.
Personal order is applied to the few best candidates only: the user's own recent queries first,
then terms of categories the user is interested in.
"""

from __future__ import annotations

import functools
import math
import re
import unicodedata
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from pypinyin import lazy_pinyin

_CJK_RE = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_SPACE_RE = re.compile(r"\s+")
_FOREIGN = "\x01"  # marks a chunk pypinyin left as is (not Chinese): it stays whole in every key
#: Candidates ranked per keystroke before the personal order is applied.
CANDIDATES = 50
#: Score added to the user's own recent queries and to terms of their interest categories.
RECENT_BOOST = 3.0
INTEREST_BOOST = 1.0
_TYPED = ("query", "hot", "history")  # kinds whose text is as users typed it (often lower case)


def key_of(text: str) -> str:
    """The form keys and typed prefixes are compared in: NFKC, lower case, no whitespace."""
    return _SPACE_RE.sub("", unicodedata.normalize("NFKC", text).lower())


def pinyin_keys(text: str) -> list[str]:
    """Full pinyin and pinyin initials of a text with Chinese characters (`华为Mate` → `huaweimate`,
    `hwmate`); [] for a text without Chinese (its own key already covers it)."""
    norm = key_of(text)
    if not _CJK_RE.search(norm):
        return []
    full, initials = [], []
    for part in lazy_pinyin(norm, errors=lambda chunk: _FOREIGN + chunk):
        if part.startswith(_FOREIGN):
            word = part[1:]
            full.append(word)
            initials.append(word)
        elif part:
            full.append(part)
            initials.append(part[0])
    keys = list(dict.fromkeys(k for k in ("".join(full), "".join(initials)) if k and k != norm))
    return keys


@functools.lru_cache(maxsize=65536)
def _cached_keys(text: str) -> tuple[str, ...]:
    """All keys of a text, cached: the user's recent queries are matched on every keystroke."""
    return (key_of(text), *pinyin_keys(text))


@dataclass(frozen=True)
class Suggestion:
    text: str
    kind: str  # query | brand | category | title | hot | history
    score: float


class SuggestIndex:
    """Suggestion terms with prefix keys; immutable once built (rebuild to change it)."""

    def __init__(self, terms: Sequence[tuple[str, str, float, Sequence[str], Sequence[str]]],
                 top_levels: Sequence[str]) -> None:
        """`terms`: (text, kind, weight, top-level categories, extra keys such as pinyin).
        `top_levels`: the catalog's top-level categories (bit positions of the interest masks)."""
        self.bits = {name: 1 << i for i, name in enumerate(top_levels)}
        self.texts = [t[0] for t in terms]
        self.kinds = [t[1] for t in terms]
        self.weights = np.array([math.log1p(max(float(t[2]), 0.0)) for t in terms], dtype=np.float64)
        self.masks = [self.mask(t[3]) for t in terms]
        pairs = sorted({(k, i) for i, t in enumerate(terms) for k in (key_of(t[0]), *t[4]) if k})
        self.keys = [k for k, _ in pairs]
        self.term_of = np.array([i for _, i in pairs], dtype=np.int64)
        self.key_weights = self.weights[self.term_of] if len(pairs) else np.zeros(0)

    @classmethod
    def of_texts(cls, weighted: Iterable[tuple[str, float]], kind: str, top_levels: Sequence[str]) -> "SuggestIndex":
        """An index over plain weighted texts (e.g. live hot queries), computing their pinyin keys."""
        return cls([(text, kind, weight, (), pinyin_keys(text)) for text, weight in weighted], top_levels)

    def mask(self, categories: Iterable[str]) -> int:
        """Bit mask of top-level categories (unknown names are ignored)."""
        out = 0
        for name in categories:
            out |= self.bits.get(name, 0)
        return out

    def __len__(self) -> int:
        return len(self.texts)

    def candidates(self, prefix_key: str, limit: int = CANDIDATES) -> list[int]:
        """Term ids whose keys start with `prefix_key`, best weight first (at most `limit`)."""
        if not prefix_key or not self.keys:
            return []
        lo = bisect_left(self.keys, prefix_key)
        hi = bisect_left(self.keys, prefix_key + "\uffff", lo)
        if hi <= lo:
            return []
        weights = self.key_weights[lo:hi]
        if hi - lo > limit:
            part = np.argpartition(-weights, limit - 1)[:limit]
            order = part[np.argsort(-weights[part], kind="stable")]
        else:
            order = np.argsort(-weights, kind="stable")
        return list(dict.fromkeys(int(self.term_of[lo + j]) for j in order))


def suggest(prefix: str, indexes: Sequence[SuggestIndex], n: int, recent_queries: Sequence[str] = (),
            interests: Iterable[str] = ()) -> list[Suggestion]:
    """The n best suggestions for a typed prefix across `indexes` (e.g. the bundle's terms and live
    hot queries), a term found in several indexes adding up its weights; personal order from the
    user's recent queries and interest categories (top-level names)."""
    key = key_of(prefix)
    if not key:
        return []
    recent = {key_of(q) for q in recent_queries}
    found: dict[str, list] = {}  # key → [text, kind, score, interest mask]; "Apple" and "apple" are one
    for index in indexes:
        wanted = index.mask(interests)
        for term in index.candidates(key):
            text, kind = index.texts[term], index.kinds[term]
            entry = found.setdefault(key_of(text), [text, kind, 0.0, 0])
            if entry[1] in _TYPED and kind not in _TYPED:  # show the catalog's spelling ("Apple")
                entry[0], entry[1] = text, kind
            entry[2] += float(index.weights[term])
            entry[3] |= index.masks[term] & wanted
    for query in recent_queries:  # the user's own searches match even when nobody else typed them
        if key_of(query) not in found and any(k.startswith(key) for k in _cached_keys(query)):
            found[key_of(query)] = [query, "history", 0.0, 0]
    scored = []
    for text_key, (text, kind, score, interest) in found.items():
        if text_key in recent:
            score += RECENT_BOOST
        if interest:
            score += INTEREST_BOOST
        scored.append(Suggestion(text, kind, round(score, 4)))
    scored.sort(key=lambda s: (-s.score, len(s.text), s.text))
    return scored[:n]
