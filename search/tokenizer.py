"""One tokenizer for item text and queries: jieba search mode for Chinese, whole ASCII words.

Text is NFKC-normalized first (full-width letters and digits become half-width) and lower-cased;
punctuation, symbols, emoji and control characters are dropped (any string is safe to tokenize).
Words of other scripts (accented Latin, Cyrillic, kana, hangul) stay whole, like ASCII words.
Each `Tokenizer` has its own jieba dictionary, so an app's brands, categories and tags become single
tokens without leaking into another app's tokenizer.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Iterable

import jieba

jieba.setLogLevel(logging.WARNING)

# Runs of CJK ideographs, or of other letters/digits (a decimal point stays inside a number: "4.5").
# `[^\W_<cjk>]` is "a word character that is neither `_` nor CJK", so "café" stays one word.
_RUN_RE = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+"
                     r"|[^\W_\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+(?:\.[0-9]+)?")
_CJK_RE = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def normalize(text: str) -> str:
    """NFKC (full-width → half-width) and lower case."""
    return unicodedata.normalize("NFKC", text).lower()


class Tokenizer:
    """Tokenizes mixed Chinese / ASCII text; `add_words` teaches it the app's vocabulary."""

    def __init__(self, words: Iterable[str] = ()) -> None:
        self._jieba = jieba.Tokenizer()
        self._jieba.initialize()
        self.add_words(words)

    def add_words(self, words: Iterable[str]) -> None:
        """Make each word (brand, category, tag) one token; words without Chinese need no entry."""
        for word in words:
            word = normalize(word).strip()
            if word and _CJK_RE.search(word) and " " not in word:
                self._jieba.add_word(word, freq=100_000)

    def tokens(self, text: str) -> list[str]:
        """The tokens of `text`, in order, duplicates kept (BM25 counts term frequency)."""
        out: list[str] = []
        for run in _RUN_RE.findall(normalize(text)):
            if _CJK_RE.match(run):
                out.extend(t for t in self._jieba.lcut_for_search(run) if t.strip())
            else:
                out.append(run)
        return out
