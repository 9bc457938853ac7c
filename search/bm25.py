"""A multi-field BM25 index stored as plain arrays, whose queries only touch their own terms' postings.

Scoring. For each field f (title, brand, category path, tags, …) we compute BM25Okapi exactly as
rank-bm25 does, with the field's own document lengths, average length and idf:

    idf_f(t)    = log(N - n_f(t) + 0.5) - log(n_f(t) + 0.5), negative values replaced by
                  epsilon * (mean idf_f over the field's vocabulary)
    bm25_f(t,d) = idf_f(t) * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len_f(d) / avgdl_f))

and a document's score is  sum over query tokens t (duplicates count, as in rank-bm25) of
sum over fields f of  w_f * bm25_f(t, d).

Why a weighted sum of per-field BM25 rather than BM25F (which pools term frequencies across fields
before saturation): each field keeps its own length normalisation (a one-token brand field is not
"short" next to a twenty-token title), one field reproduces rank-bm25 exactly — our reference answer in
tests — and, because the score is linear in the per-field parts, the weighted sum of every field can be
precomputed per (term, document) at build time. A query then only adds up precomputed contributions.

Layout (term-major CSR, impact-ordered):
    indptr[t] : indptr[t + 1]   → the postings of term t, highest impact first (ties: lower doc id)
    postings                    → document ids (int32)
    impacts                     → sum_f w_f * bm25_f(t, d) (float64, so scores match rank-bm25 to 1e-6)
A query sums the impacts of its terms' postings (one `bincount`) and selects the top k with a partition;
a one-term query just reads the head of its postings. Unless live changes added postings, queries
(filters included) do the same in one call of a small C kernel (`search/_bm25_kernel.c`, built at
install): same sums in the same order, same answers, without the fixed cost of the NumPy calls
(tests check both paths).

Live changes (an overlay). `upsert` and `remove` change the index without a rebuild: a changed or new
document is scored into a small overlay that is searched alongside the base arrays, and its old base
postings are masked. The overlay is an approximation, by design: it uses the base index's idf and average
lengths (so adding documents does not shift the other documents' scores), and a term the base has never
seen in a field gets the idf of a term seen in one document of N (the rarest base term: new brands match
strongly). Each change recompiles the overlay's postings (cost grows with the overlay, milliseconds for
thousands of changed items); the next training rebuilds the base and the overlay starts empty again.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import numpy as np
import pandas as pd

from recsys.bundle import Bundle, BundleWriter

try:  # compiled at install time (search/_bm25_kernel.c); without it the NumPy path answers the same
    from search import _bm25_kernel
except ImportError:  # pragma: no cover - an install whose C build failed
    _bm25_kernel = None

#: Default field weights for catalog items: a brand or category hit says more than a title word,
#: tags ("包邮", "新品") say little about what the item is.
ITEM_FIELD_WEIGHTS: dict[str, float] = {"title": 1.0, "brand": 1.5, "category": 1.0, "tags": 0.3}
FORMAT = 1


@dataclass(frozen=True)
class _Overlay:
    """An immutable snapshot of live changes: swapped as a whole, so a search never sees half an update."""

    docs: dict[int, dict[str, float]] = field(default_factory=dict)  # doc id → term → impact
    postings: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # term → (ids, impacts)
    masked: np.ndarray | None = None  # base documents replaced or removed (None: none)


def _idf(df: np.ndarray, n_docs: int, epsilon: float) -> np.ndarray:
    """rank-bm25's BM25Okapi idf over the terms with df > 0 (the others get 0 and are never used)."""
    present = df > 0
    idf = np.zeros(len(df))
    idf[present] = np.log(n_docs - df[present] + 0.5) - np.log(df[present] + 0.5)
    if present.any():
        floor = epsilon * float(idf[present].mean())
        idf[present & (idf < 0)] = floor
    return idf


def _saturation(tf: np.ndarray, length: np.ndarray, avgdl: float, k1: float, b: float) -> np.ndarray:
    """The tf part of BM25Okapi, written in rank-bm25's operation order so results agree bit for bit."""
    return tf * (k1 + 1) / (tf + k1 * (1 - b + b * length / avgdl))


def _top_k(ids: np.ndarray, scores: np.ndarray, k: int, ascending: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The k best (ids, scores), highest score first, ties broken by ascending id (deterministic).

    `ascending` says `ids` are already sorted, so a stable sort by score alone breaks ties right.
    """
    n = len(scores)
    if n > max(4 * k, 512):  # below a few hundred candidates one sort beats partition + select
        threshold = np.partition(scores, n - k)[n - k]
        keep = (scores >= threshold).nonzero()[0]  # every tie at the boundary stays, then the id decides
        ids, scores = ids[keep], scores[keep]
    # ndarray methods rather than np.* wrappers: at a few microseconds per query the wrappers show
    order = ((-scores).argsort(kind="stable") if ascending else np.lexsort((ids, -scores)))[:k]
    return ids[order], scores[order]


def _distinct(ids: np.ndarray) -> np.ndarray:
    """Sorted distinct ids (cheaper than `np.unique` for the small arrays of a query)."""
    if len(ids) == 0:
        return ids
    ordered = ids.copy()
    ordered.sort()
    first = np.empty(len(ordered), dtype=bool)
    first[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    return ordered[first]


def _scan_is_cheaper(n_docs: int, n_postings: int) -> bool:
    """Scanning a dense array costs ~1 ns per document; working on the postings instead costs a few
    more numpy calls (~10 µs) plus a few ns per posting. Measured on numpy 2.x, x86-64."""
    return n_docs <= 8192 + 4 * n_postings


def _touched(ids: np.ndarray, dense: np.ndarray) -> np.ndarray:
    """The distinct ids, ascending: sort the postings when they are few next to the documents,
    else scan the dense sums once."""
    if not _scan_is_cheaper(len(dense), len(ids)):
        return _distinct(ids)
    return (dense != 0).nonzero()[0].astype(np.int32)


def _sum_by_doc(ids: np.ndarray, scores: np.ndarray, n_docs: int) -> tuple[np.ndarray, np.ndarray]:
    """Add up the scores of repeated ids: (distinct ids ascending, summed scores).

    One counting pass into a dense array sums them (numpy's bincount is far cheaper than a sort-based
    group-by, and `np.unique` is slower still).
    """
    dense = np.bincount(ids, weights=scores, minlength=n_docs)
    touched = _touched(ids, dense)
    return touched, dense[touched]


class BM25Index:
    """BM25 over token lists of one or more fields; see the module docstring for the formula."""

    def __init__(self, *, vocab: list[str], indptr: np.ndarray, postings: np.ndarray, impacts: np.ndarray,
                 n_base: int, fields: Sequence[str], weights: Sequence[float], df: np.ndarray,
                 avgdl: np.ndarray, k1: float, b: float, epsilon: float) -> None:
        if not (len(indptr) == len(vocab) + 1 and len(postings) == len(impacts) == indptr[-1]):
            raise ValueError("inconsistent BM25 arrays: indptr must have len(vocab)+1 entries ending at len(postings)")
        self.vocab = vocab
        self.term_ids = {t: i for i, t in enumerate(vocab)}
        # contiguous int32 / float64: the layout the compiled kernel reads (a no-op for what build and load give)
        postings = np.ascontiguousarray(postings, dtype=np.int32)
        impacts = np.ascontiguousarray(impacts, dtype=np.float64)
        self.indptr, self.postings, self.impacts = indptr, postings, impacts
        self._nonnegative = bool(len(impacts) == 0 or impacts.min() >= 0)  # false only if an idf floor is < 0
        bounds = indptr.tolist()  # term → (start, end) as Python ints: the cheapest lookup per query
        self.spans = {t: (bounds[i], bounds[i + 1]) for i, t in enumerate(vocab) if bounds[i + 1] > bounds[i]}
        self.n_base = int(n_base)
        self.fields, self.weights = tuple(fields), np.asarray(weights, dtype=np.float64)
        self.k1, self.b, self.epsilon = float(k1), float(b), float(epsilon)
        # per-field document frequencies (fields × terms) and average lengths: kept for the overlay
        self.df, self.avgdl = np.asarray(df), np.asarray(avgdl, dtype=np.float64)
        self.idf = np.array([_idf(row, self.n_base, self.epsilon) for row in self.df]).reshape(self.df.shape)
        self._overlay = _Overlay()
        self._lock = threading.Lock()  # serializes writers; readers use the current snapshot
        #: Queries go through the compiled kernel when it is installed (see `_search_compiled`).
        self.use_kernel = _bm25_kernel is not None
        self._scratch = threading.local()  # the kernel's per-thread work arrays

    # ------------------------------------------------------------------------------------ build
    @classmethod
    def build(cls, fields: Mapping[str, Sequence[Sequence[str]]], weights: Mapping[str, float] | None = None, *,
              k1: float = 1.5, b: float = 0.75, epsilon: float = 0.25) -> "BM25Index":
        """Index documents given as token lists per field: `{"title": [[tok, …], …], "brand": …}`.

        Every field lists the same documents in the same order (document id = position). `weights`
        defaults to 1.0 for every field. Defaults k1=1.5, b=0.75, epsilon=0.25 are rank-bm25's.
        """
        names = list(fields)
        if not names:
            raise ValueError("BM25Index.build needs at least one field")
        n_docs = len(fields[names[0]])
        if n_docs == 0:
            raise ValueError("BM25Index.build needs at least one document")
        for name in names:
            if len(fields[name]) != n_docs:
                raise ValueError(f"field {name!r} has {len(fields[name])} documents, field {names[0]!r} has {n_docs}")
        weights = dict(weights or {})
        unknown = set(weights) - set(names)
        if unknown:
            raise ValueError(f"weights for unknown fields {sorted(unknown)}; fields are {names}")
        w = np.array([float(weights.get(n, 1.0)) for n in names])

        lengths = [np.fromiter(map(len, fields[n]), dtype=np.int64, count=n_docs) for n in names]
        flat = [list(chain.from_iterable(fields[n])) for n in names]
        codes, uniques = pd.factorize(pd.Series(list(chain.from_iterable(flat)), dtype=object), sort=False)
        vocab = [str(t) for t in uniques]
        n_terms = len(vocab)

        keys, parts = [], []
        df = np.zeros((len(names), n_terms), dtype=np.int32)
        avgdl = np.zeros(len(names))
        start = 0
        for f, name in enumerate(names):
            term = codes[start:start + len(flat[f])].astype(np.int64)
            start += len(flat[f])
            total = int(lengths[f].sum())
            if total == 0:
                continue  # an empty field scores nothing (rank-bm25 would divide by zero)
            avgdl[f] = total / n_docs  # Python division of ints, as rank-bm25 computes it
            doc = np.repeat(np.arange(n_docs, dtype=np.int64), lengths[f])
            key, tf = np.unique(term * n_docs + doc, return_counts=True)
            term_of, doc_of = key // n_docs, key % n_docs
            df[f] = np.bincount(term_of, minlength=n_terms)
            impact = _idf(df[f], n_docs, epsilon)[term_of] * _saturation(tf, lengths[f][doc_of], avgdl[f], k1, b)
            keys.append(key)
            parts.append(impact if w[f] == 1.0 else w[f] * impact)
        key = np.concatenate(keys)
        impact = np.concatenate(parts)
        if len(keys) > 1:  # sum the fields' parts of one (term, doc)
            key, inverse = np.unique(key, return_inverse=True)
            impact = np.bincount(inverse, weights=impact)
        nonzero = impact != 0  # a zero idf adds nothing: leave it out of the postings
        key, impact = key[nonzero], impact[nonzero]
        term_of, doc_of = key // n_docs, key % n_docs
        # within a term, best impact first (ties: lower doc id), so a one-term query reads the head
        order = np.lexsort((doc_of, -impact, term_of))
        term_of, doc_of, impact = term_of[order], doc_of[order], impact[order]
        indptr = np.zeros(n_terms + 1, dtype=np.int64)
        np.cumsum(np.bincount(term_of, minlength=n_terms), out=indptr[1:])
        return cls(vocab=vocab, indptr=indptr, postings=doc_of.astype(np.int32), impacts=impact,
                   n_base=n_docs, fields=names, weights=w, df=df, avgdl=avgdl, k1=k1, b=b, epsilon=epsilon)

    # ------------------------------------------------------------------------------------ search
    @property
    def n_docs(self) -> int:
        """Documents addressable by id: the base ones and any added after build (ids may leave gaps)."""
        return self._n_docs(self._overlay)

    def _n_docs(self, overlay: "_Overlay") -> int:
        docs = overlay.docs
        return max(self.n_base, max(docs) + 1) if docs else self.n_base

    def search(self, tokens: Sequence[str], k: int = 10,
               candidate_mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (doc_ids, scores) for a tokenized query, best first; ties go to the lower doc id.

        Only documents that contain a query term are returned (possibly fewer than k). Tokens repeat
        as in rank-bm25 (a token twice counts twice); unknown tokens add nothing. `candidate_mask`
        (bool, one entry per doc id, at least the base documents) keeps only the documents marked True;
        added documents beyond its end came after the caller built it (a live upsert in between) and
        are left out.
        """
        if k <= 0:
            raise ValueError(f"k must be positive, got {k}")
        overlay = self._overlay  # one snapshot for the whole query
        n_docs = self._n_docs(overlay)
        if candidate_mask is not None and len(candidate_mask) < n_docs:
            if len(candidate_mask) < self.n_base:
                raise ValueError(f"candidate_mask has {len(candidate_mask)} entries; the index has {n_docs} doc ids")
            candidate_mask = np.concatenate([candidate_mask, np.zeros(n_docs - len(candidate_mask), dtype=bool)])
        if self.use_kernel and not overlay.postings:
            found = self._search_compiled(tokens, k, overlay.masked, candidate_mask)
            if found is not None:
                return found
        counts: dict[str, int] = {}
        for token in tokens:
            counts[token] = counts.get(token, 0) + 1
        spans = [(span, c) for t, c in counts.items() if (span := self.spans.get(t)) is not None]
        extra = self._overlay_scores(counts, overlay) if overlay.postings else None
        if len(spans) == 1 and extra is None:
            return self._one_term(*spans[0], k, overlay.masked, candidate_mask)
        if len(spans) > 1 and extra is None and overlay.masked is None and candidate_mask is None:
            return self._many_terms(spans, k)
        ids, scores = self._base_scores(spans)
        ascending = len(spans) > 1  # summed ids come out sorted; one term's postings are impact-ordered
        if overlay.masked is not None and len(ids):
            alive = ~overlay.masked[ids]
            ids, scores = ids[alive], scores[alive]
        if extra is not None and len(extra[0]):
            ids, scores = np.concatenate([ids, extra[0]]), np.concatenate([scores, extra[1]])
            ascending = False
        if candidate_mask is not None and len(ids):
            keep = candidate_mask[ids]
            ids, scores = ids[keep], scores[keep]
        return _top_k(ids, scores, k, ascending)

    def _one_term(self, span: tuple[int, int], count: int, k: int, masked: np.ndarray | None,
                  candidate_mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """A one-term query needs no arithmetic: postings are stored best first, so take the head."""
        lo, hi = span
        ids, scores = self.postings[lo:hi], self.impacts[lo:hi]
        if masked is not None or candidate_mask is not None:
            keep = np.ones(hi - lo, dtype=bool) if masked is None else ~masked[ids]
            if candidate_mask is not None:
                keep &= candidate_mask[ids]
            head = keep.nonzero()[0][:k]
            ids, scores = ids[head], scores[head]
        return ids[:k].copy(), scores[:k] * count

    def _search_compiled(self, tokens: Sequence[str], k: int, masked: np.ndarray | None,
                         candidate_mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray] | None:
        """The query in one call of the C kernel when no live change added postings: the same answers as
        the NumPy path (same sums in the same order, same floats, same ties, same masks), without the
        fixed cost of up to ten NumPy calls, most of a query on a small catalog. None: take the NumPy path."""
        scratch = getattr(self._scratch, "arrays", None)
        if scratch is None:
            scratch = (np.zeros(self.n_base), np.zeros(self.n_base, dtype=np.uint8),
                       np.empty(self.n_base, dtype=np.int32))
            self._scratch.arrays = scratch
        ids, scores = np.empty(k, dtype=np.int32), np.empty(k)
        found = _bm25_kernel.search(tokens, self.spans, self.postings, self.impacts, k, masked, candidate_mask,
                                    *scratch, ids, scores)
        return None if found < 0 else (ids[:found], scores[:found])

    def _many_terms(self, spans: list[tuple[tuple[int, int], int]], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Several terms and no filter: sum into a dense array, then rank only the documents that can
        make the top k.

        Postings are impact-ordered, so the first k postings of a term are k distinct documents that
        each score at least that term's k-th impact (impacts are never negative unless an epsilon
        floor is; then we use the lowest summed score of those k documents). That value bounds the k-th
        best score from below, so only documents at or above it are ranked; we take the term whose k-th
        impact is highest, the tightest such bound.
        """
        ids = np.concatenate([self.postings[lo:hi] for (lo, hi), _ in spans])
        scores = np.concatenate([self.impacts[lo:hi] * c if c != 1 else self.impacts[lo:hi]
                                 for (lo, hi), c in spans])
        dense = np.bincount(ids, weights=scores, minlength=self.n_base)
        head, best = -1, -np.inf
        for (lo, hi), c in spans:
            if hi - lo >= k and self.impacts[lo + k - 1] * c > best:
                head, best = lo, self.impacts[lo + k - 1] * c
        if head < 0:  # every term has fewer than k postings: rank them all
            top = _touched(ids, dense)
        else:
            # with no negative impacts a document scores at least its impact in any one term, so the
            # k-th impact itself is a bound and costs nothing to read
            bound = best if self._nonnegative else dense[self.postings[head:head + k]].min()
            if bound > 0 and _scan_is_cheaper(self.n_base, len(ids)):
                top = (dense >= bound).nonzero()[0]  # one scan of a small corpus, ids come out sorted
            else:
                top = _distinct(ids[dense[ids] >= bound])
        return _top_k(top, dense[top], k, ascending=True)

    def _base_scores(self, spans: list[tuple[tuple[int, int], int]]) -> tuple[np.ndarray, np.ndarray]:
        """Summed scores of the base documents that contain a query term (ids unique)."""
        if not spans:
            return np.empty(0, dtype=np.int32), np.empty(0)
        if len(spans) == 1:  # one term: its postings are already unique per document
            (lo, hi), count = spans[0]
            return self.postings[lo:hi], self.impacts[lo:hi] * count
        ids = np.concatenate([self.postings[lo:hi] for (lo, hi), _ in spans])
        scores = np.concatenate([self.impacts[lo:hi] * c if c != 1 else self.impacts[lo:hi]
                                 for (lo, hi), c in spans])
        return _sum_by_doc(ids, scores, self.n_base)

    @staticmethod
    def _overlay_scores(counts: Mapping[str, int], overlay: _Overlay) -> tuple[np.ndarray, np.ndarray]:
        id_parts, score_parts = [], []
        for token, count in counts.items():
            hit = overlay.postings.get(token)
            if hit is not None:
                id_parts.append(hit[0])
                score_parts.append(hit[1] * count)
        if not id_parts:
            return np.empty(0, dtype=np.int32), np.empty(0)
        ids = np.concatenate(id_parts)
        return _sum_by_doc(ids, np.concatenate(score_parts), int(ids.max()) + 1)

    # ------------------------------------------------------------------------------------ live changes
    def upsert(self, doc_id: int, fields: Mapping[str, Sequence[str]]) -> None:
        """Add or replace one document, searchable at once (scored with the base idf / avgdl).

        `fields` maps field names to tokens; a field left out is empty. Ids below `n_base` replace a
        base document; any other non-negative id adds one.
        """
        doc_id = self._check_id(doc_id)
        unknown = set(fields) - set(self.fields)
        if unknown:
            raise ValueError(f"unknown fields {sorted(unknown)}; the index has {list(self.fields)}")
        impacts: dict[str, float] = {}
        rare_idf = float(np.log(self.n_base - 1 + 0.5) - np.log(1 + 0.5))
        for f, name in enumerate(self.fields):
            tokens = list(fields.get(name, ()))
            if not tokens or self.avgdl[f] == 0:
                continue
            tf = Counter(tokens)
            terms = list(tf)
            ids = np.array([self.term_ids.get(t, -1) for t in terms])
            seen = (ids >= 0) & (self.df[f][np.maximum(ids, 0)] > 0)
            idf = np.where(seen, self.idf[f][np.maximum(ids, 0)], rare_idf)
            sat = _saturation(np.array([tf[t] for t in terms], dtype=np.float64),
                              np.float64(len(tokens)), float(self.avgdl[f]), self.k1, self.b)
            for term, value in zip(terms, self.weights[f] * idf * sat):
                impacts[term] = impacts.get(term, 0.0) + float(value)
        with self._lock:
            docs = dict(self._overlay.docs)
            docs[doc_id] = impacts
            self._publish(docs, doc_id)

    def remove(self, doc_id: int) -> None:
        """Drop one document from results at once (hidden, out of stock, deleted); unknown ids are ignored."""
        doc_id = self._check_id(doc_id)
        with self._lock:
            docs = dict(self._overlay.docs)
            docs.pop(doc_id, None)
            self._publish(docs, doc_id)

    def _check_id(self, doc_id: int) -> int:
        if isinstance(doc_id, bool) or not isinstance(doc_id, (int, np.integer)) or doc_id < 0:
            raise ValueError(f"doc_id must be a non-negative integer, got {doc_id!r}")
        return int(doc_id)

    def _publish(self, docs: dict[int, dict[str, float]], changed: int) -> None:
        """Compile the overlay's postings and swap the snapshot in (caller holds the lock)."""
        by_term: dict[str, list[tuple[int, float]]] = {}
        for doc, impacts in docs.items():
            for term, value in impacts.items():
                if value != 0:
                    by_term.setdefault(term, []).append((doc, value))
        postings = {t: (np.array([d for d, _ in pairs], dtype=np.int32), np.array([v for _, v in pairs]))
                    for t, pairs in by_term.items()}
        masked = self._overlay.masked
        if changed < self.n_base and (masked is None or not masked[changed]):
            masked = np.zeros(self.n_base, dtype=bool) if masked is None else masked.copy()
            masked[changed] = True
        self._overlay = _Overlay(docs=docs, postings=postings, masked=masked)

    # ------------------------------------------------------------------------------------ bundle
    def save(self, writer: BundleWriter, prefix: str = "bm25") -> None:
        """Write the base index into a bundle as `<prefix>.*` arrays and `<prefix>.meta.json`.

        Live changes are not saved (they are replayed from the catalog, or folded in by the next
        training); saving an index with pending changes raises ValueError rather than losing them.
        """
        if self._overlay.docs or self._overlay.masked is not None:
            raise ValueError("this index has live changes (upsert/remove); rebuild it from the catalog before saving")
        writer.save_array(f"{prefix}.indptr", self.indptr)
        writer.save_array(f"{prefix}.postings", self.postings)
        writer.save_array(f"{prefix}.impacts", self.impacts)
        writer.save_array(f"{prefix}.df", self.df)
        writer.save_array(f"{prefix}.avgdl", self.avgdl)
        writer.save_json(f"{prefix}.meta", {
            "format": FORMAT, "n_docs": self.n_base, "fields": list(self.fields),
            "weights": [float(w) for w in self.weights], "k1": self.k1, "b": self.b,
            "epsilon": self.epsilon, "vocab": self.vocab})

    @classmethod
    def load(cls, bundle: Bundle, prefix: str = "bm25") -> "BM25Index":
        """Read an index written by `save` (plain arrays, no pickle)."""
        meta: dict[str, Any] = bundle.json(f"{prefix}.meta")
        if meta.get("format") != FORMAT:
            raise ValueError(f"{bundle.path}: {prefix}.meta.json has format {meta.get('format')!r}, expected {FORMAT}")
        return cls(vocab=meta["vocab"], indptr=bundle.array(f"{prefix}.indptr"),
                   postings=bundle.array(f"{prefix}.postings"), impacts=bundle.array(f"{prefix}.impacts"),
                   n_base=meta["n_docs"], fields=meta["fields"], weights=meta["weights"],
                   df=bundle.array(f"{prefix}.df"), avgdl=bundle.array(f"{prefix}.avgdl"),
                   k1=meta["k1"], b=meta["b"], epsilon=meta["epsilon"])
