"""`minirec bench search`: our BM25 index against rank-bm25 and bm25s, plus relevance on real data.

Speed. Each corpus is tokenized once with minirec's tokenizer under the default analysis of served
titles (jieba words, Chinese character bigrams and single characters) and the same token lists go to
all three engines. Queries are 1-3 distinct tokens of randomly drawn titles (seeded). Every engine answers the
same queries one at a time on one thread, in alternating blocks of 50 queries per engine (so a
shared machine's drifting load hits every engine alike); we time each query (query tokens in →
top-10 out) and report queries/s (queries / total time) and the p50 / p99 latency.
- minirec: `BM25Index.search(tokens, k=10)`.
- rank-bm25: `BM25Okapi(k1=1.5, b=0.75, epsilon=0.25).get_scores(tokens)` plus a top-10 argpartition.
  It loops over every document for every term, so it is timed on the first `reference_queries` queries
  (all queries by default; pass a smaller number for a quick run).
- bm25s: `BM25(method="atire", idf_method="robertson")`, numpy backend, `retrieve([tokens], k=10)`.
  atire's tf part is exactly BM25Okapi's `tf (k1+1) / (tf + k1 (1 - b + b dl/avgdl))` and robertson's
  idf is `log((N - n + 0.5) / (n + 0.5))`; bm25s clips negative idf to 0 where rank-bm25 uses
  epsilon * mean idf, and scores in float32 (its default), so its ranking matches except for terms in
  more than half the documents.
`identical_top10` is true when, on every query rank-bm25 answered, our ten (id, score) pairs are a
correct top-10 of rank-bm25's scores: each score equals rank-bm25's score of that document to 1e-6, and
our k-th best score equals rank-bm25's k-th best. Both rank ties by ascending document id; documents
with score 0 are not results (rank-bm25 pads its top-10 with them when fewer than 10 match).

Relevance. QBQTC dev: corpus = distinct titles, one query per distinct query text, relevant = titles
with label ≥ 1 (queries without any are skipped): MRR@10 and Recall@10, with jieba words alone
(k1 1.5, b 0.75: the reference figure) and with the served analysis and BM25 parameters. Cranfield: document = the .W
field (it repeats the title), queries numbered 1..225 in file order, English tokens lower-cased with a
33-word stopword list and a plural-only "S" stemmer; MAP over the full ranking (relevant = codes 1-4);
nDCG@10 with graded gains 5 - code (code 1, "complete answer", gains 4 … code 4 gains 1; -1 is not
relevant) and log2 discounts.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.harness import progress  # noqa: E402
from offline_training.datafolder import load_data_folder  # noqa: E402
from offline_training.importers import import_amazon_unisrec  # noqa: E402
from offline_training.synth import generate_mall  # noqa: E402
from recsys.item_features import catalog_tokenizer  # noqa: E402
from search.bm25 import BM25Index  # noqa: E402
from recsys.config import SearchConfig  # noqa: E402
from vocab.tokenizer import Tokenizer, check_analysis  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
K = 10
K1, B, EPSILON = 1.5, 0.75, 0.25  # rank-bm25's defaults, used by all three engines
ENGINES = ("minirec", "rank_bm25", "bm25s")
BLOCK = 50  # queries per engine per timing round
# Lucene's classic English stop set.
STOPWORDS = frozenset("a an and are as at be but by for if in into is it no not of on or such that the their "
                      "then there these they this to was will with".split())
Tokens = list[str]
#: The default analysis of titles in served indexes ([search] in the training config).
TITLE_ANALYSIS = check_analysis(SearchConfig().analysis["title"], "search.analysis.title")
Searcher = Callable[[Tokens], tuple[np.ndarray, ...]]


def _cached_tokens(texts: Sequence[str], tokenize: Callable[[str], Tokens]) -> list[Tokens]:
    """Tokenize each distinct text once (catalogs repeat titles)."""
    cache: dict[str, Tokens] = {}
    return [cache[t] if t in cache else cache.setdefault(t, tokenize(t)) for t in texts]


# ------------------------------------------------------------------------------------ corpora
def synthetic_corpus(n_items: int = 100_000, seed: int = 0) -> list[Tokens]:
    """Titles of a synthetic Chinese mall (offline_training.synth), tokenized with its catalog tokenizer."""
    with tempfile.TemporaryDirectory() as tmp:
        generate_mall(Path(tmp) / "mall", users=10, items=n_items, events=10, seed=seed, progress=False)
        items = pd.read_parquet(Path(tmp) / "mall" / "items.parquet")
    return _cached_tokens(items["title"].tolist(), _served_tokens(items))


def _served_tokens(items: pd.DataFrame) -> Callable[[str], Tokens]:
    """The catalog's tokenizer under the default analysis of titles (words, bigrams, characters):
    what a served index holds, so the speed comparison is on the tokens search really uses."""
    tokenizer, analysis = catalog_tokenizer(items), TITLE_ANALYSIS
    return lambda text: tokenizer.tokens(text, analysis)


def amazon_corpus(folder: Path) -> list[Tokens]:
    """Titles of Amazon 'Industrial & Scientific' items, through the project's own importer."""
    with tempfile.TemporaryDirectory() as tmp:
        import_amazon_unisrec(folder, Path(tmp) / "amazon")
        items = load_data_folder(Path(tmp) / "amazon").items
    return _cached_tokens(items["title"].tolist(), _served_tokens(items))


def sample_queries(docs: Sequence[Tokens], n: int, seed: int = 0) -> list[Tokens]:
    """n queries of 1-3 distinct tokens, each from one random non-empty document."""
    rng = np.random.default_rng(seed)
    pool = [d for d in docs if d]
    queries = []
    for doc in (pool[i] for i in rng.integers(0, len(pool), n)):
        distinct = list(dict.fromkeys(doc))
        size = min(len(distinct), int(rng.integers(1, 4)))
        queries.append([distinct[i] for i in sorted(rng.choice(len(distinct), size, replace=False))])
    return queries


# ------------------------------------------------------------------------------------ engines
def _rank_bm25_top(model: Any) -> Searcher:
    """Top-10 from rank-bm25; the full score vector rides along (untimed use: the identity check)."""
    def search(query: Tokens) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        scores = model.get_scores(query)
        top = np.argpartition(scores, len(scores) - K)[len(scores) - K:]
        return top, scores[top], scores
    return search


def _bm25s_top(model: Any) -> Searcher:
    def search(query: Tokens) -> tuple[np.ndarray, np.ndarray]:
        result = model.retrieve([query], k=K, show_progress=False, n_threads=0)
        return result.documents[0], result.scores[0]
    return search


def _time_interleaved(searchers: dict[str, Searcher], queries: Sequence[Tokens], limits: dict[str, int],
                      after: dict[str, Callable[[int, tuple[np.ndarray, ...], dict], Any]]) -> tuple[dict, dict]:
    """Time the engines in alternating blocks of `BLOCK` queries: each engine runs warm within a block,
    and drifting machine load (a shared CI box) hits all engines alike.

    Engine e answers the first `limits[e]` queries. Returns per engine {qps, p50_ms, p99_ms} and its
    answers, or `after[e](i, answer, answers so far)` computed outside the timed part.
    """
    for search in searchers.values():
        for query in queries[:5]:  # warm caches and lazy initialisation
            search(query)
    took = {e: np.empty(limits[e]) for e in searchers}
    answers: dict[str, list[Any]] = {e: [] for e in searchers}
    for block in range(0, len(queries), BLOCK):
        for engine, search in searchers.items():
            for i in range(block, min(block + BLOCK, limits[engine])):
                start = time.perf_counter()
                answer = search(queries[i])
                took[engine][i] = time.perf_counter() - start
                answers[engine].append(after[engine](i, answer, answers) if engine in after else answer)
    stats = {e: {"qps": len(t) / t.sum(), "p50_ms": float(np.percentile(t, 50) * 1e3),
                 "p99_ms": float(np.percentile(t, 99) * 1e3)} for e, t in took.items()}
    return stats, answers


def _valid_top10(ours: tuple[np.ndarray, ...], reference: np.ndarray) -> bool:
    """Is `ours` a correct top-10 of the reference scores (see the module docstring)?"""
    ids, scores = ours
    positive = np.sort(reference[reference > 0])[::-1][:K]
    if len(ids) != len(positive):
        return False
    return bool(np.allclose(scores, reference[ids], rtol=0, atol=1e-6)
                and np.allclose(scores, positive, rtol=0, atol=1e-6))


def bench_corpus(name: str, docs: list[Tokens], queries: list[Tokens], reference_queries: int | None) -> dict:
    """Build the three engines over the same tokens and time them on the same queries."""
    import bm25s
    from rank_bm25 import BM25Okapi

    started = time.perf_counter()
    index = BM25Index.build({"title": docs}, k1=K1, b=B, epsilon=EPSILON)
    built = {"minirec": time.perf_counter() - started}
    started = time.perf_counter()
    reference = BM25Okapi(docs, k1=K1, b=B, epsilon=EPSILON)
    built["rank_bm25"] = time.perf_counter() - started
    started = time.perf_counter()
    other = bm25s.BM25(k1=K1, b=B, method="atire", idf_method="robertson")
    other.index(docs, show_progress=False)
    built["bm25s"] = time.perf_counter() - started
    progress(f"[{name}] {len(docs):,} docs, build seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in built.items()))

    n_ref = min(len(queries), reference_queries or len(queries))

    def check(i: int, answer: tuple[np.ndarray, ...], answers: dict) -> tuple[bool, bool]:
        """rank-bm25's full scores against our answer to the same query (engines run in dict order)."""
        ours = answers["minirec"][i]
        return _valid_top10(ours, answer[2]), _same_order(ours, answer[2])

    searchers = {"minirec": lambda q: index.search(q, K), "bm25s": _bm25s_top(other),
                 "rank_bm25": _rank_bm25_top(reference)}
    stats, got = _time_interleaved(searchers, queries, {"minirec": len(queries), "bm25s": len(queries),
                                                        "rank_bm25": n_ref}, {"rank_bm25": check})
    for engine in ENGINES:
        progress(f"[{name}] {engine:<9} {len(got[engine]):>5} queries: {stats[engine]['qps']:>10.1f} q/s  "
                  f"p50 {stats[engine]['p50_ms']:.3f} ms  p99 {stats[engine]['p99_ms']:.3f} ms")
    ref_queries = queries[:n_ref]
    identical = all(valid for valid, _ in got["rank_bm25"])
    same_ids = sum(same for _, same in got["rank_bm25"])
    progress(f"[{name}] identical top-10 on {len(ref_queries)} queries: {identical} "
              f"(id lists equal after id tie-break: {same_ids}/{len(ref_queries)}); "
              f"minirec/rank_bm25 {stats['minirec']['qps'] / stats['rank_bm25']['qps']:.0f}x, "
              f"minirec/bm25s {stats['minirec']['qps'] / stats['bm25s']['qps']:.1f}x")
    return {"name": name, "n_docs": len(docs), "n_queries": len(queries), "identical_top10": identical,
            **{metric: {e: round(stats[e][metric], 4) for e in ENGINES} for metric in ("qps", "p50_ms", "p99_ms")}}


def _same_order(ours: tuple[np.ndarray, ...], reference: np.ndarray) -> bool:
    """Strict check: rank-bm25's positive scores sorted by (score desc, id asc) give our exact id list."""
    positive = np.flatnonzero(reference > 0)
    order = positive[np.lexsort((positive, -reference[positive]))][:K]
    return bool(np.array_equal(order, ours[0]))


# ------------------------------------------------------------------------------------ relevance
def qbqtc_relevance(path: Path, analysis: tuple[str, ...] = ("words",), k1: float = K1,
                    b: float = B) -> dict[str, float]:
    """MRR@10 and Recall@10 over distinct queries with at least one title labelled ≥ 1 (the index
    alone; `minirec bench relevance` measures the search route)."""
    pairs = pd.read_json(path, lines=True, dtype={"label": int})
    titles = pairs["title"].drop_duplicates().tolist()
    title_id = {t: i for i, t in enumerate(titles)}
    tokenizer = Tokenizer()
    tokens = _cached_tokens(titles, lambda text: tokenizer.tokens(text, analysis))
    index = BM25Index.build({"title": tokens}, k1=k1, b=b, epsilon=EPSILON)
    relevant = pairs[pairs["label"] >= 1].groupby("query")["title"].agg(lambda s: {title_id[t] for t in s})
    rr, recall = [], []
    for query, wanted in relevant.items():
        ids, _ = index.search(tokenizer.tokens(query, analysis), K)
        ranks = [r for r, doc in enumerate(ids.tolist(), 1) if doc in wanted]
        rr.append(1.0 / ranks[0] if ranks else 0.0)
        recall.append(len(ranks) / len(wanted))
    return {"mrr@10": round(float(np.mean(rr)), 4), "recall@10": round(float(np.mean(recall)), 4)}


def _cranfield_records(path: Path) -> list[dict[str, str]]:
    """Parse `.I n` records with `.X` field markers (CRLF-safe)."""
    records: list[dict[str, str]] = []
    current = None
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = line.rstrip()
        if line.startswith(".I"):
            records.append({})
        elif re.fullmatch(r"\.[TABW]", line):
            current = line[1]
            records[-1][current] = ""
        elif records and current:
            records[-1][current] += line + "\n"
    return records


def english_tokens(text: str, tokenizer: Tokenizer) -> Tokens:
    """Lower-cased words without stopwords, plurals folded ("wings" → "wing", "bodies" → "body")."""
    out = []
    for word in tokenizer.tokens(text):
        if word in STOPWORDS:
            continue
        if len(word) > 4 and word.endswith("ies") and word[-4] not in "ae":
            word = word[:-3] + "y"
        elif len(word) > 3 and word.endswith("es") and word[-3] not in "aeo":
            word = word[:-1]
        elif len(word) > 3 and word.endswith("s") and word[-2] not in "us":
            word = word[:-1]
        out.append(word)
    return out


def cranfield_relevance(folder: Path) -> dict[str, float]:
    """nDCG@10 (graded) and MAP (binary, full ranking) over the 225 Cranfield queries."""
    tokenizer = Tokenizer()
    docs = [english_tokens(r.get("W", ""), tokenizer) for r in _cranfield_records(folder / "cran.all.1400")]
    queries = [english_tokens(r.get("W", ""), tokenizer) for r in _cranfield_records(folder / "cran.qry")]
    qrels = pd.read_csv(folder / "cranqrel", sep=r"\s+", header=None, names=["q", "doc", "code"])
    qrels = qrels[qrels["code"].between(1, 4)]
    gains = {q: dict(zip(g["doc"] - 1, 5 - g["code"])) for q, g in qrels.groupby("q")}
    index = BM25Index.build({"text": docs}, k1=K1, b=B, epsilon=EPSILON)
    discounts = 1.0 / np.log2(np.arange(2, K + 2))
    ndcg, ap = [], []
    for number, query in enumerate(queries, 1):
        judged = gains.get(number)
        if not judged:
            continue
        ids, _ = index.search(query, len(docs))
        got = np.array([judged.get(int(d), 0) for d in ids])
        ideal = np.sort(np.fromiter(judged.values(), dtype=float))[::-1][:K]
        ndcg.append(float(got[:K] @ discounts[:len(got[:K])] / (ideal @ discounts[:len(ideal)])))
        hits = got > 0
        precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
        ap.append(float(precision[hits].sum() / len(judged)))
    return {"ndcg@10": round(float(np.mean(ndcg)), 4), "map": round(float(np.mean(ap)), 4)}


# ------------------------------------------------------------------------------------ entry points
def run_search_bench(json_path: str | Path | None = None, *, data: str | Path = DATA, n_items: int = 100_000,
                     n_queries: int = 1000, reference_queries: int | None = None, seed: int = 0) -> dict:
    """Run the whole search benchmark; return (and optionally write as JSON) the issue-4 result shape.

    `reference_queries` limits how many of the queries rank-bm25 answers (None: all of them).
    """
    data = Path(data)
    corpora = []
    progress(f"generating and tokenizing a synthetic catalog of {n_items:,} titles …")
    docs = synthetic_corpus(n_items, seed)
    corpora.append(bench_corpus("synthetic_zh_100k" if n_items == 100_000 else f"synthetic_zh_{n_items}",
                                docs, sample_queries(docs, n_queries, seed), reference_queries))
    docs = amazon_corpus(data / "amazon-scientific")
    corpora.append(bench_corpus("amazon_scientific", docs, sample_queries(docs, n_queries, seed), reference_queries))
    served = SearchConfig()
    relevance = {"qbqtc_dev": qbqtc_relevance(data / "qbqtc" / "dev.json"),
                 "qbqtc_dev_served_analysis": qbqtc_relevance(data / "qbqtc" / "dev.json", TITLE_ANALYSIS,
                                                              served.k1, served.b),
                 "cranfield": cranfield_relevance(data / "cranfield")}
    progress(f"relevance: {relevance}")
    result = {"corpora": corpora, "relevance": relevance}
    if json_path is not None:
        Path(json_path).write_text(json.dumps(result, indent=2, ensure_ascii=False), encoding="utf-8")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the results to this file")
    parser.add_argument("--data", default=str(DATA), help="folder holding amazon-scientific, qbqtc and cranfield")
    parser.add_argument("--items", type=int, default=100_000, help="synthetic catalog size")
    parser.add_argument("--queries", type=int, default=1000, help="queries per corpus")
    parser.add_argument("--reference-queries", type=int, default=None,
                        help="how many of the queries rank-bm25 answers (it is slow; default: all)")
    args = parser.parse_args(argv)
    result = run_search_bench(args.json, data=args.data, n_items=args.items, n_queries=args.queries,
                              reference_queries=args.reference_queries)
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
