"""Queries rewritten as shoppers also type them: pinyin, initials, homophones, typos (seeded).

`variant(name, query, rng)` returns the rewritten query, or None when the rewrite does not apply
(a query without Chinese has no pinyin; one without an ASCII word of five letters has no typo).
"""

from __future__ import annotations

import functools
import re

import numpy as np
from pypinyin import lazy_pinyin

from vocab.tokenizer import Tokenizer

_CJK = re.compile(r"[\u4e00-\u9fff]")
_ASCII_WORD = re.compile(r"[a-z]{5,}")
VARIANTS = ("pinyin", "pinyin_spaced", "initials", "mixed", "homophone", "typo")
_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _readings(query: str) -> list[tuple[str, bool]]:
    """(toneless pinyin, True) per Chinese character; (run, False) for other runs, as typed."""
    out = []
    for part in lazy_pinyin(query, errors=lambda chunk: "\x01" + chunk):
        if part.startswith("\x01"):
            out += [(w, False) for w in part[1:].lower().split()]
        elif part.strip():
            out.append((part, True))
    return out


def _syllables(query: str) -> list[str]:
    return [text for text, _ in _readings(query)]


@functools.lru_cache(maxsize=1)
def _homophones() -> dict[str, list[str]]:
    """Toneless pinyin → the common characters (GB2312 level 1, 3,755) that read so."""
    chars = []
    for high in range(0xB0, 0xD8):
        for low in range(0xA1, 0xFF):
            try:
                chars.append(bytes([high, low]).decode("gb2312"))
            except UnicodeDecodeError:
                continue
    groups: dict[str, list[str]] = {}
    for char in chars:
        if _CJK.match(char):
            groups.setdefault(lazy_pinyin(char)[0], []).append(char)
    return groups


@functools.lru_cache(maxsize=1)
def _tokenizer() -> Tokenizer:
    return Tokenizer()


def _mixed(query: str) -> str | None:
    """The first Chinese word as pinyin initials, the rest as typed (华为手机 → hw手机)."""
    words = _tokenizer().segment(query)
    first = next((k for k, w in enumerate(words) if _CJK.match(w)), None)
    if first is None or len(words) < 2 or len(words[first]) < 2:
        return None
    initials = "".join(s[0] for s in lazy_pinyin(words[first]))
    return "".join(words[:first]) + initials + "".join(words[first + 1:])


def _homophone(query: str, rng: np.random.Generator) -> str | None:
    positions = [k for k, c in enumerate(query) if _CJK.match(c)]
    rng.shuffle(positions)
    for k in positions:
        others = [c for c in _homophones().get(lazy_pinyin(query[k])[0], []) if c != query[k]]
        if others:
            return query[:k] + others[int(rng.integers(len(others)))] + query[k + 1:]
    return None


def _typo(query: str, rng: np.random.Generator) -> str | None:
    words = list(_ASCII_WORD.finditer(query.lower()))
    if not words:
        return None
    match = words[int(rng.integers(len(words)))]
    word, k = match.group(), int(rng.integers(len(match.group()) - 1))
    kind = int(rng.integers(4))
    if kind == 0:  # two neighbours swapped
        typo = word[:k] + word[k + 1] + word[k] + word[k + 2:]
    elif kind == 1:  # a letter dropped
        typo = word[:k] + word[k + 1:]
    elif kind == 2:  # a letter replaced
        typo = word[:k] + rng.choice([c for c in _LETTERS if c != word[k]]) + word[k + 1:]
    else:  # a letter added
        typo = word[:k] + rng.choice(list(_LETTERS)) + word[k:]
    return query.lower()[:match.start()] + typo + query.lower()[match.end():]


def variant(name: str, query: str, rng: np.random.Generator) -> str | None:
    """`query` rewritten as `name` (one of VARIANTS), or None if that rewrite does not apply."""
    has_chinese = bool(_CJK.search(query))
    if name in ("pinyin", "pinyin_spaced", "initials") and not has_chinese:
        return None
    if name == "pinyin":
        return "".join(_syllables(query))
    if name == "pinyin_spaced":
        return " ".join(_syllables(query))
    if name == "initials":
        return "".join(text[0] if chinese else text for text, chinese in _readings(query))
    if name == "mixed":
        return _mixed(query) if has_chinese else None
    if name == "homophone":
        return _homophone(query, rng) if has_chinese else None
    if name == "typo":
        return _typo(query, rng)
    raise ValueError(f"unknown variant {name!r}; choose from {', '.join(VARIANTS)}")
