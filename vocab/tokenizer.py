"""One tokenizer for item text and queries: jieba search mode for Chinese, whole ASCII words, and
optionally the overlapping character bigrams and single characters of each Chinese run.

An *analysis* is a subset of `ANALYSES`:
- `words`: jieba's search mode (a long word and its dictionary parts: 西门子 → 西门, 门子, 西门子);
- `bigrams`: overlapping character pairs of each Chinese run (华为手机 → 华为, 为手, 手机), as Lucene's
  CJK bigram filter and Elasticsearch's `cjk` analyzer do, so a query still matches when jieba
  segments the query and the title differently (a lone character stays as itself);
- `chars`: each Chinese character on its own (recall for one-character words and rare names).
Tokens of different analyses are plain strings in one vocabulary: a bigram equal to a word counts as
that word again, which weights two-character words up (measured better than keeping them apart, see
docs/search-relevance.md). ASCII and other words are the same in every analysis.

Text is NFKC-normalized first (full-width letters and digits become half-width) and lower-cased;
punctuation, symbols, emoji and control characters are dropped (any string is safe to tokenize).
Words of other scripts (accented Latin, Cyrillic, kana, hangul) stay whole, like ASCII words.
Memory: jieba's dictionary (~350k words and their prefixes, ~65 MB, ~0.5 s to load) is loaded once per
process and shared, read-only, by every `Tokenizer`; each `Tokenizer` keeps only an overlay of its
own words (an app's brands, categories and tags: a few thousand entries), consulted first. So an
app's words become single tokens without leaking into another app's tokenizer, and an app costs
its overlay, not a dictionary.
"""

from __future__ import annotations

import logging
import re
import threading
import unicodedata
from collections.abc import Iterable
from typing import Any

import jieba

jieba.setLogLevel(logging.WARNING)

# Runs of CJK ideographs, or of other letters/digits (a decimal point stays inside a number: "4.5").
# `[^\W_<cjk>]` is "a word character that is neither `_` nor CJK", so "café" stays one word.
_RUN_RE = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+"
                     r"|[^\W_\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+(?:\.[0-9]+)?")
_CJK_RE = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")

ANALYSES: tuple[str, ...] = ("words", "bigrams", "chars")
WORDS: tuple[str, ...] = ("words",)


def check_analysis(analysis: Iterable[str], where: str) -> tuple[str, ...]:
    """The analysis as a tuple in canonical order; ValueError naming `where` for an unknown or empty one."""
    chosen = tuple(analysis)
    unknown = [a for a in chosen if a not in ANALYSES]
    if unknown or not chosen:
        raise ValueError(f"{where}: analysis {list(chosen)} must be a non-empty subset of {list(ANALYSES)}")
    return tuple(a for a in ANALYSES if a in chosen)


def normalize(text: str) -> str:
    """NFKC (full-width → half-width) and lower case."""
    return unicodedata.normalize("NFKC", text).lower()


class _OverlayFreq(dict):
    """jieba's word → frequency table of one tokenizer: its own words (this dict) over the shared
    base dictionary (never written). jieba reads `FREQ` with `in`, `[]` and `.get`, and `add_word`
    writes into it with `[]=`, which lands in the overlay."""

    __slots__ = ("base",)

    def __init__(self, base: dict[str, int]) -> None:
        super().__init__()
        self.base = base

    def __missing__(self, key: str) -> int:
        return self.base[key]

    def __contains__(self, key: object) -> bool:
        return dict.__contains__(self, key) or key in self.base

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        value = dict.get(self, key)  # frequencies are ints, never None
        return value if value is not None else self.base.get(key, default)


_BASE: jieba.Tokenizer | None = None
_BASE_LOCK = threading.Lock()


def _base_dictionary() -> jieba.Tokenizer:
    """The process's one initialized jieba dictionary (loaded on first use; nothing writes to it)."""
    global _BASE
    if _BASE is None:
        with _BASE_LOCK:
            if _BASE is None:
                base = jieba.Tokenizer()
                base.initialize()
                _BASE = base
    return _BASE


class _OverlayJieba(jieba.Tokenizer):
    """A jieba tokenizer whose dictionary is the shared base plus an overlay of its own words."""

    def __init__(self, base: jieba.Tokenizer) -> None:
        super().__init__(base.dictionary)
        self.FREQ = _OverlayFreq(base.FREQ)
        self.total = base.total  # add_word adds each word's frequency, as in a dictionary of its own
        self.initialized = True  # never load a dictionary of its own


class Tokenizer:
    """Tokenizes mixed Chinese / ASCII text; `add_words` teaches it the app's vocabulary (kept in
    this tokenizer's overlay over the process's shared jieba dictionary)."""

    def __init__(self, words: Iterable[str] = ()) -> None:
        self._jieba = _OverlayJieba(_base_dictionary())
        self.add_words(words)

    @property
    def overlay_size(self) -> int:
        """Entries of this tokenizer's own (words and their prefixes): what it costs beyond the base."""
        return len(self._jieba.FREQ)

    def add_words(self, words: Iterable[str]) -> None:
        """Make each word (brand, category, tag) one token; words without Chinese need no entry."""
        for word in words:
            word = normalize(word).strip()
            if word and _CJK_RE.search(word) and " " not in word:
                self._jieba.add_word(word, freq=100_000)

    def is_dictionary_word(self, text: str) -> bool:
        """Whether jieba's dictionary (with the app's words) has `text` as a word."""
        return bool(self._jieba.FREQ.get(text))

    def segment(self, text: str) -> list[str]:
        """jieba's precise segmentation of a text (each character in exactly one word)."""
        return self._jieba.lcut(text)

    def tokens(self, text: str, analysis: tuple[str, ...] = WORDS) -> list[str]:
        """The tokens of `text` under `analysis` (see the module docstring), duplicates kept (BM25
        counts term frequency)."""
        out: list[str] = []
        for run in _RUN_RE.findall(normalize(text)):
            if not _CJK_RE.match(run):
                out.append(run)
                continue
            if "words" in analysis:
                out.extend(t for t in self._jieba.lcut_for_search(run) if t.strip())
            if "bigrams" in analysis:
                out.extend([run[i:i + 2] for i in range(len(run) - 1)] if len(run) > 1 else [run])
            if "chars" in analysis and not ("bigrams" in analysis and len(run) == 1):
                out.extend(run)
        return out
