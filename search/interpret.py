"""Reading a query as the shopper meant it: pinyin, ASCII typos and Chinese homophones.

Shoppers on a phone often type pinyin and pick characters later, or not at all (`shouji`,
`pao bu xie`, initials `hw`, mixed `hw手机`), mistype ASCII words (`iphnoe`) and take the wrong
character of the right sound (`华为手几`). A `QueryReader` is built per bundle from the catalog's own
words (`search_analysis.json`: every Chinese word of titles, brands, categories and tags, with the
number of items having it) and the index's ASCII words, and reads a query in three steps:

1. **Pinyin.** A run of ASCII letters (spaces allowed inside) that is not a word of the catalog is
   segmented (dynamic programming: fewest pieces, then the most popular) into the suggest index's
   terms (what people searched, brands, category names: the keys as-you-type suggest uses) and the
   catalog's words, by their full pinyin or, for two or more characters, their initials; the
   catalog's ASCII words may sit inside (`vivosj` → vivo 手机). A run is read wholly as full pinyin
   or wholly as initials, never a mix (`3dbody` is not 豆瓣 哦 电影), and letters with many vowels
   are not initials (`acesse`). A searched term beats a catalog word of the same key (hw: 华为 is
   searched, 户外 is in more titles); among catalog words read from initials, the one found in the
   most items together with the query's other words is taken (`hw手机`). The reading needs every
   letter covered and a Chinese word of two or more characters (or a single syllable). ASCII words
   of the catalog (`iphone`, `adidas`) are never read as pinyin.
2. **Typos** (as Meilisearch and Typesense by default): an unknown ASCII word of 5-8 letters may be one
   edit away from a catalog word, a longer one two edits (optimal string alignment: a swap of two
   neighbours is one edit); the closest wins, then the more frequent. Shorter words are left alone.
3. **Homophones.** A Chinese run is segmented into catalog words, where a segment may also be a
   catalog word that reads the same (same toneless pinyin) as characters that are not a word in
   jieba's dictionary and whose character pairs the catalog has never seen (with bigram analysis;
   else that are not a catalog word): 手几 reads shou ji like 手机, while 日是 of "11月14日是" occurs in
   titles and stays. A correction is taken only when it needs fewer words than the typed characters.

Steps 2 and 3 are corrections (`Reading.corrected`); step 1 only reads what was typed. The reader is
built when a bundle loads: words of items added live (`PUT items`) are searchable at once but are
read from pinyin only after the next training.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from pypinyin import lazy_pinyin
from rapidfuzz import process
from rapidfuzz.distance import OSA

from vocab.tokenizer import Tokenizer, normalize

_CJK_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
# What the tokenizer sees as runs: Chinese characters, or other letters and digits.
_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+|[^\W_\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
_LETTERS_OR_NOT = re.compile(r"[a-z]+|[^a-z]+")
_ASCII_WORD = re.compile(r"[a-z]+")
#: Extra cost of a one-character word read from pinyin (longer words are likelier meant).
SINGLE_CHAR_COST = 0.3
MAX_WORD_LETTERS = 30
#: Cost of a searched term in a pinyin reading (a catalog word costs 1): people type what they search.
TERM_COST = 0.9
#: Share of vowels above which letters are not read as pinyin initials (syllables rarely start with one).
MAX_INITIALS_VOWELS = 0.25
#: Words kept per pinyin-initials key for choosing by the query's other words.
INITIALS_CANDIDATES = 8
CACHE_SIZE = 4096


@dataclass(frozen=True)
class Reading:
    """What a query is searched as: `text` (words separated by spaces) and whether it corrected typos
    or homophones (False: it only read pinyin)."""

    text: str
    corrected: bool


def max_edits(word: str) -> int:
    """Edits allowed to correct an ASCII word: 0 below 5 letters, 1 up to 8, 2 beyond."""
    return 0 if len(word) < 5 else 1 if len(word) <= 8 else 2


class QueryReader:
    """Reads queries against one catalog's words; immutable once built, cached per query text."""

    def __init__(self, words: Mapping[str, int], ascii_words: Mapping[str, int], tokenizer: Tokenizer,
                 bigrams: bool = False, terms: Iterable[tuple[str, float]] = ()) -> None:
        """`words`: Chinese words → items having them; `ascii_words`: the index's ASCII words → items;
        `bigrams`: the index has character bigrams (then a pair the catalog has seen is not a typo);
        `terms`: the suggest index's (text, weight): searched queries, brands, categories."""
        self._tokenizer = tokenizer
        self.bigrams = bigrams
        self._words = set(words)
        self.full: dict[str, tuple[str, int]] = {}  # "shouji" → (手机, items)
        self.initials: dict[str, tuple[str, int]] = {}  # "sj" → (手机, items)
        self.initials_all: dict[str, list[tuple[str, int]]] = {}  # "hw" → [(华为, items), (户外, items), …]
        self.sounds: dict[str, tuple[str, int]] = {}  # "shou ji" → (手机, items): homophones
        for word, count in words.items():
            if not _CJK_RUN.fullmatch(word):
                continue
            syllables = lazy_pinyin(word)
            if len(syllables) != len(word):
                continue
            _keep_best(self.full, "".join(syllables), word, count)
            _keep_best(self.sounds, " ".join(syllables), word, count)
            if len(word) >= 2:
                key = "".join(s[0] for s in syllables)
                _keep_best(self.initials, key, word, count)
                self.initials_all.setdefault(key, []).append((word, count))
        for options in self.initials_all.values():
            options.sort(key=lambda x: (-x[1], len(x[0]), x[0]))
            del options[INITIALS_CANDIDATES:]
        # searched terms by the keys suggest reads them with; preferred to catalog words of the same key
        self.term_full: dict[str, tuple[str, int]] = {}
        self.term_initials: dict[str, tuple[str, int]] = {}
        self.term_initials_all: dict[str, list[tuple[str, int]]] = {}
        for text, weight in terms:
            if not _CJK_RUN.search(text):
                continue
            syllables = lazy_pinyin(normalize(text), errors=lambda chunk: [f"\x01{w}" for w in chunk.split()])
            full = "".join(s.lstrip("\x01") for s in syllables)
            initials = "".join(s[1:] if s.startswith("\x01") else s[:1] for s in syllables)
            _keep_best(self.term_full, full, text, int(weight * 1000))
            if len(text) >= 2:
                _keep_best(self.term_initials, initials, text, int(weight * 1000))
                self.term_initials_all.setdefault(initials, []).append((text, int(weight * 1000)))
        self._longest = max(map(len, [*self.full, *self.term_full]), default=0)
        # initials key → candidates for the query's context: searched terms first, then catalog words
        self.candidates: dict[str, list[str]] = {}
        for key in {*self.initials_all, *self.term_initials_all}:
            terms_first = sorted(self.term_initials_all.get(key, []), key=lambda x: (-x[1], x[0]))
            self.candidates[key] = list(dict.fromkeys(
                [t for t, _ in terms_first] + [w for w, _ in self.initials_all.get(key, [])]))[:INITIALS_CANDIDATES]
        # most frequent first, so that among equally close words the first found is the most frequent
        self._ascii = [w for w, _ in sorted(ascii_words.items(), key=lambda x: (-x[1], x[0]))
                       if _ASCII_WORD.fullmatch(w) and len(w) >= 4]
        self._ascii_set = set(ascii_words)
        self._cache: OrderedDict[str, Reading | None] = OrderedDict()
        self._lock = threading.Lock()

    def read(self, query: str, known: Callable[[str], bool],
             together: Callable[[str, list[str]], int] | None = None) -> Reading | None:
        """The query as searched if it reads differently from how it was typed, else None.
        `known(token)` says whether the index has a token (live items included); `together(word,
        others)` counts the items having the word and the other words (initials' context)."""
        key = normalize(query).strip()
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        reading = self._read(key, known, together)
        with self._lock:
            self._cache[key] = reading
            if len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return reading

    def _read(self, text: str, known: Callable[[str], bool],
              together: Callable[[str, list[str]], int] | None) -> Reading | None:
        parts: list[list[str]] = []
        changed, corrected, guessed, keys = False, False, [], {}
        for k, (piece, kind) in enumerate(_pieces(text, known)):
            if kind == "chinese":
                words, fixed = self._homophones(piece, known)
                changed |= fixed
                corrected |= fixed
            elif kind == "letters":
                words, how, by_initials = self._letters(piece, known)
                changed |= how is not None
                corrected |= how == "typo"
                guessed += [(k, w) for w, _ in by_initials]
                keys.update({(k, w): key for w, key in by_initials})
            else:
                words = [piece]
            parts.append(words)
        if guessed and together is not None:
            for k, position in guessed:  # initials: the candidate that goes with the query's other words
                others = [w for j, words in enumerate(parts) if j != k for w in words]
                if others:
                    options = self.candidates[keys[(k, position)]]
                    parts[k][position] = max(options, key=lambda c: (together(c, others), -options.index(c)))
        return Reading(" ".join(w for words in parts for w in words), corrected) if changed else None

    # --- ASCII letters: catalog words, pinyin, typos ------------------------------------------
    def _letters(self, piece: str, known: Callable[[str], bool]) -> tuple[list[str], str | None, list[tuple[int, str]]]:
        """The words an ASCII piece stands for, how they were read (None, "pinyin" or "typo"), and
        (position, initials) of the words read from initials."""
        words = piece.split()
        if all(known(w) or w in self._ascii_set for w in words):
            return words, None, []
        read = self._read_pinyin(piece.replace(" ", ""))
        if read is not None:
            return [w for w, _ in read], "pinyin", [(k, key) for k, (_, key) in enumerate(read) if key]
        out, kind = [], None
        for word in words:
            fixed = None if known(word) else self.typo(word)
            if fixed is not None:
                kind = "typo"
            out.append(fixed or word)
        return out, kind, []

    def pinyin(self, letters: str) -> list[str] | None:
        """Catalog words spelled by `letters` (full pinyin or initials), or None if they do not read
        as such (see the module docstring)."""
        read = self._read_pinyin(letters)
        return None if read is None else [w for w, _ in read]

    def _read_pinyin(self, letters: str) -> list[tuple[str, str]] | None:
        """The cheaper of the full-pinyin and the initials readings (ties: full pinyin)."""
        readings = [r for r in (self._pinyin(letters, initials=False), self._pinyin(letters, initials=True))
                    if r is not None]
        return min(readings, key=lambda r: r[0])[1] if readings else None

    def _pinyin(self, letters: str, initials: bool) -> tuple[float, list[tuple[str, str]]] | None:
        """(cost, [(word, its initials if read from them, else "")]) of the best reading of `letters`
        by full pinyin or by initials, or None."""
        n = len(letters)
        if n == 0 or n > 4 * MAX_WORD_LETTERS:
            return None
        words, terms = (self.initials, self.term_initials) if initials else (self.full, self.term_full)
        # best[i] = (cost, -popularity, [(word, initials key)], vowels read as initials) of letters[:i]
        best: list[tuple[float, int, list[tuple[str, str]], int] | None] = [None] * (n + 1)
        best[0] = (0.0, 0, [], 0)
        for i in range(1, n + 1):
            for j in range(max(0, i - max(self._longest, 2)), i):
                if best[j] is None:
                    continue
                piece = letters[j:i]
                options = []
                guess = piece if initials else ""
                if piece in terms:
                    text, weight = terms[piece]
                    options.append((text, TERM_COST, weight, guess))
                elif piece in words:
                    word, count = words[piece]
                    options.append((word, 1.0 + (SINGLE_CHAR_COST if len(word) == 1 else 0.0), count, guess))
                if len(piece) >= 2 and piece in self._ascii_set:
                    options.append((piece, 1.0, 0, ""))
                for word, step, popularity, guessed in options:
                    as_initials = initials and word != piece
                    vowels = best[j][3] + (sum(c in "aeiou" for c in piece) if as_initials else 0)
                    candidate = (best[j][0] + step, best[j][1] - popularity, best[j][2] + [(word, guessed)], vowels)
                    if best[i] is None or candidate[:2] < best[i][:2]:
                        best[i] = candidate
        found = best[n]
        if found is None or (initials and found[3] > max(1, n * MAX_INITIALS_VOWELS)):
            return None
        chinese = [w for w, _ in found[2] if _CJK_RUN.search(w)]
        if chinese and (any(len(w) >= 2 for w in chinese) or len(found[2]) == 1):
            return found[0], found[2]
        return None

    def typo(self, word: str) -> str | None:
        """The closest catalog ASCII word within `max_edits(word)`, or None."""
        limit = max_edits(word)
        if limit == 0 or not self._ascii:
            return None
        found = process.extractOne(word, self._ascii, scorer=OSA.distance, score_cutoff=limit)
        return None if found is None else found[0]

    # --- Chinese homophones ----------------------------------------------------------------
    def _homophones(self, run: str, known: Callable[[str], bool]) -> tuple[list[str], bool]:
        """The run as typed (one piece) or, if homophones read it in fewer catalog words, those words."""
        n = len(run)
        if n < 2:
            return [run], False
        syllables = lazy_pinyin(run)
        if len(syllables) != n:
            return [run], False
        # best[i] = (words, corrections, -items, words list)
        best: list[tuple[int, int, int, list[str]] | None] = [None] * (n + 1)
        best[0] = (0, 0, 0, [])
        for i in range(1, n + 1):
            for j in range(max(0, i - 8), i):
                if best[j] is None:
                    continue
                typed = run[j:i]
                options = []
                seen = self.bigrams and all(known(typed[m:m + 2]) for m in range(len(typed) - 1))
                if i - j == 1 or typed in self._words or seen or self._tokenizer.is_dictionary_word(typed):
                    options.append((typed, 0, 0))
                elif i - j >= 2:
                    found = self.sounds.get(" ".join(syllables[j:i]))
                    if found is not None and found[0] != typed:
                        options.append((found[0], 1, found[1]))
                for word, fixes, count in options:
                    prev = best[j]
                    candidate = (prev[0] + 1, prev[1] + fixes, prev[2] - count, prev[3] + [word])
                    if best[i] is None or candidate[:3] < best[i][:3]:
                        best[i] = candidate
        result = best[n]
        if result is None or result[1] == 0:
            return [run], False
        return result[3], True


def _pieces(text: str, known: Callable[[str], bool]) -> list[tuple[str, str]]:
    """The query in pieces to read: (Chinese run, "chinese"), (unknown ASCII letters, "letters": runs
    separated by spaces only are one piece, as `pao bu xie`), or (anything else, "as typed"). A
    run the index knows (`iphone`, `3dmax`) stays as typed; an unknown one such as `15meili` is split
    into letters and the rest."""
    out: list[tuple[str, str]] = []
    end = 0
    for match in _RUN.finditer(text):
        run, gap = match.group(), text[end:match.start()]
        end = match.end()
        if _CJK_RUN.fullmatch(run):
            out.append((run, "chinese"))
        elif known(run) or not run.isascii():
            out.append((run, "as typed"))
        else:
            for part in _LETTERS_OR_NOT.findall(run):
                if not part.isalpha():
                    out.append((part, "as typed"))
                elif out and out[-1][1] == "letters" and gap.isspace() and part == run:
                    out[-1] = (f"{out[-1][0]} {part}", "letters")  # pao bu xie: one piece
                else:
                    out.append((part, "letters"))
    return out


def _keep_best(table: dict[str, tuple[str, int]], key: str, word: str, count: int) -> None:
    """Keep the word found in more items under `key` (ties: the shorter, then the first in order)."""
    current = table.get(key)
    if current is None or (count, -len(word)) > (current[1], -len(current[0])):
        table[key] = (word, count)


def ascii_words(vocab: Iterable[str], counts: Iterable[int]) -> dict[str, int]:
    """The ASCII letter words of an index vocabulary with their posting counts."""
    return {w: int(c) for w, c in zip(vocab, counts) if w.isascii() and w.isalpha()}
