"""BM25 index: rank-bm25 is the reference answer; fields, live changes, bundles and tokenizer edge cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rank_bm25 import BM25Okapi

from offline_training.synth import generate_mall
from recsys.bundle import BundleWriter, verify
from recsys.item_features import catalog_tokenizer
from search.bm25 import BM25Index
from vocab.tokenizer import Tokenizer


def _zipf_corpus(seed: int, n_docs: int, vocab: int = 300) -> tuple[list[list[str]], np.ndarray, list[str]]:
    """Random documents whose head words occur in most documents (so rank-bm25's idf floor is used)."""
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(vocab)]
    p = 1.0 / np.arange(1, vocab + 1)
    p /= p.sum()
    docs = [list(rng.choice(words, size=int(rng.integers(0, 20)), p=p)) for _ in range(n_docs)]
    return docs, p, words


def _full_scores(index: BM25Index, query: list[str]) -> np.ndarray:
    ids, scores = index.search(query, k=index.n_docs)
    full = np.zeros(index.n_docs)
    full[ids] = scores
    return full


def _reference_top(scores: np.ndarray, k: int = 10) -> np.ndarray:
    """rank-bm25's documents with a positive score, best first, ties by ascending id."""
    positive = np.flatnonzero(scores > 0)
    return positive[np.lexsort((positive, -scores[positive]))][:k]


def _assert_matches_reference(index: BM25Index, reference: BM25Okapi, queries: list[list[str]]) -> None:
    """Both query paths, the compiled kernel's and NumPy's, give rank-bm25's top 10."""
    assert index.use_kernel, "the compiled BM25 kernel is not installed (pip install -e . builds it)"
    for query in queries:
        expected = reference.get_scores(query)
        np.testing.assert_allclose(_full_scores(index, query), expected, rtol=0, atol=1e-6, err_msg=str(query))
        answers = []
        for use_kernel in (True, False):
            index.use_kernel = use_kernel
            ids, scores = index.search(query, k=10)
            np.testing.assert_array_equal(ids, _reference_top(expected), err_msg=f"{query} kernel={use_kernel}")
            np.testing.assert_allclose(scores, expected[ids], rtol=0, atol=1e-6)
            answers.append((ids, scores))
        index.use_kernel = True
        np.testing.assert_array_equal(answers[0][1], answers[1][1])  # the same floats, not just close


# ------------------------------------------------------------------------------------ rank-bm25 equality
# (not b=1: rank-bm25 then divides 0 by 0 on empty documents and returns NaN)
@pytest.mark.parametrize(("k1", "b", "epsilon"), [(1.5, 0.75, 0.25), (1.2, 0.4, 0.5), (2.0, 0.9, 0.0)])
def test_one_field_equals_rank_bm25_on_random_corpus(k1: float, b: float, epsilon: float) -> None:
    docs, p, words = _zipf_corpus(seed=1, n_docs=1500)
    reference = BM25Okapi(docs, k1=k1, b=b, epsilon=epsilon)
    doc_freq = pd.Series([w for d in docs for w in set(d)]).value_counts()
    assert (doc_freq > len(docs) / 2).any(), "some idf must be negative, to exercise the epsilon floor"
    index = BM25Index.build({"title": docs}, k1=k1, b=b, epsilon=epsilon)
    rng = np.random.default_rng(2)
    queries = [list(rng.choice(words, size=int(rng.integers(1, 5)), p=p)) for _ in range(150)]
    queries += [["w0"], ["w0", "w0", "w3"], ["w1", "unknown"], ["unknown"], []]
    _assert_matches_reference(index, reference, queries)


def test_negative_epsilon_floor_matches_rank_bm25() -> None:
    """When most terms are in most documents the mean idf is negative, and so is rank-bm25's floor."""
    rng = np.random.default_rng(11)
    docs = [["a", "b"] + (["c"] if i % 7 == 0 else []) + [f"x{int(rng.integers(0, 3))}"] * int(rng.integers(0, 3))
            for i in range(60)]
    reference = BM25Okapi(docs)
    assert reference.average_idf < 0
    index = BM25Index.build({"title": docs})
    for query in (["a"], ["a", "b"], ["a", "c"], ["c", "x1", "a"], ["x2", "b", "b"]):
        expected = reference.get_scores(query)
        np.testing.assert_allclose(_full_scores(index, query), expected, rtol=0, atol=1e-6)
        ids, scores = index.search(query, k=5)
        matched = np.flatnonzero([any(t in d for t in query) for d in docs])
        want = matched[np.lexsort((matched, -expected[matched]))][:5]
        np.testing.assert_array_equal(ids, want)


def test_ties_break_by_lower_doc_id() -> None:
    docs = [["a", "b"], ["c"], ["a", "b"], ["a", "b"], ["d"]] * 10
    index = BM25Index.build({"title": docs})
    ids, scores = index.search(["a", "c"], k=4)
    reference = BM25Okapi(docs).get_scores(["a", "c"])
    np.testing.assert_array_equal(ids, _reference_top(reference, 4))
    assert list(ids) == sorted(ids, key=lambda d: (-reference[d], d))
    np.testing.assert_allclose(scores, reference[ids], atol=1e-9)


@pytest.fixture(scope="module")
def mall_titles(tmp_path_factory: pytest.TempPathFactory) -> list[list[str]]:
    out = tmp_path_factory.mktemp("mall") / "mall"
    generate_mall(out, users=5, items=3000, events=5, seed=3, progress=False)
    items = pd.read_parquet(out / "items.parquet")
    tokenizer = catalog_tokenizer(items)
    return [tokenizer.tokens(t) for t in items["title"]]


def test_equals_rank_bm25_on_chinese_catalog(mall_titles: list[list[str]]) -> None:
    rng = np.random.default_rng(4)
    queries = []
    for i in rng.integers(0, len(mall_titles), 200):
        words = list(dict.fromkeys(mall_titles[i]))
        size = min(len(words), int(rng.integers(1, 4)))
        queries.append([words[j] for j in rng.choice(len(words), size, replace=False)])
    _assert_matches_reference(BM25Index.build({"title": mall_titles}), BM25Okapi(mall_titles), queries)


@pytest.mark.realdata
def test_equals_rank_bm25_on_amazon_titles(amazon_scientific: Path) -> None:
    text = pd.read_csv(amazon_scientific / "Scientific.text", sep="\t", dtype=str)["text:token_seq"]
    tokenizer = Tokenizer()
    docs = [tokenizer.tokens(t.split(". ")[0]) for t in text]
    rng = np.random.default_rng(5)
    sample = [docs[i] for i in rng.integers(0, len(docs), 150)]
    queries = [list(rng.choice(d, size=min(len(d), 3), replace=False)) for d in sample if d]
    _assert_matches_reference(BM25Index.build({"title": docs}), BM25Okapi(docs), queries)


def test_filtered_and_unfiltered_paths_agree(mall_titles: list[list[str]]) -> None:
    """The no-filter fast paths (one term, several terms) give what the general path gives."""
    index = BM25Index.build({"title": mall_titles})
    everyone = np.ones(index.n_docs, dtype=bool)
    rng = np.random.default_rng(6)
    for i in rng.integers(0, len(mall_titles), 100):
        query = list(rng.choice(mall_titles[i], size=min(len(mall_titles[i]), int(rng.integers(1, 4)))))
        fast, general = index.search(query, k=10), index.search(query, k=10, candidate_mask=everyone)
        np.testing.assert_array_equal(fast[0], general[0])
        np.testing.assert_allclose(fast[1], general[1], atol=1e-12)


def test_kernel_refuses_bad_arguments_without_touching_memory() -> None:
    from search import _bm25_kernel

    index = BM25Index.build({"title": [["a", "b"], ["b", "c"], ["a"]]})
    n, P, I = index.n_base, index.postings, index.impacts
    scratch = (np.zeros(n), np.zeros(n, dtype=np.uint8), np.empty(n, dtype=np.int32))
    out = (np.empty(10, dtype=np.int32), np.empty(10))
    with pytest.raises(ValueError, match="outside the postings"):
        _bm25_kernel.search(["a"], {"a": (0, len(P) + 5)}, P, I, 10, None, None, *scratch, *out)
    with pytest.raises(TypeError, match="format"):
        _bm25_kernel.search(["a"], index.spans, P.astype(np.int64), I, 10, None, None, *scratch, *out)
    with pytest.raises(ValueError, match="lengths"):
        _bm25_kernel.search(["a"], index.spans, P, I, 20, None, None, *scratch, *out)
    with pytest.raises(TypeError, match="spans"):
        _bm25_kernel.search(["a"], {"a": (0,)}, P, I, 10, None, None, *scratch, *out)
    with pytest.raises(TypeError, match="sequence"):
        _bm25_kernel.search(None, index.spans, P, I, 10, None, None, *scratch, *out)
    with pytest.raises(TypeError, match="keep"):
        _bm25_kernel.search(["a"], index.spans, P, I, 10, None, np.ones(n, dtype=np.int64), *scratch, *out)
    with pytest.raises(ValueError, match="masked"):
        _bm25_kernel.search(["a"], index.spans, P, I, 10, np.zeros(n - 1, dtype=bool), None, *scratch, *out)
    assert not scratch[0].any() and not scratch[1].any()  # an error leaves the scratch clean


def test_queries_of_more_than_64_distinct_terms_take_the_numpy_path() -> None:
    from search import _bm25_kernel

    docs, _, words = _zipf_corpus(seed=5, n_docs=400)
    index = BM25Index.build({"title": docs})
    n = index.n_base
    scratch = (np.zeros(n), np.zeros(n, dtype=np.uint8), np.empty(n, dtype=np.int32))
    out = (np.empty(10, dtype=np.int32), np.empty(10))
    known = [w for w in words if w in index.spans][:70]
    assert len(known) == 70
    found = _bm25_kernel.search(known, index.spans, index.postings, index.impacts, 10, None, None, *scratch, *out)
    assert found == -1
    assert not scratch[0].any() and not scratch[1].any()
    reference = BM25Okapi(docs).get_scores(known)
    ids, _ = index.search(known, k=10)  # answered by the NumPy path
    np.testing.assert_array_equal(ids, _reference_top(reference))


def test_both_query_paths_answer_the_same() -> None:
    docs, _, words = _zipf_corpus(seed=3, n_docs=800)
    index = BM25Index.build({"title": docs})
    rng = np.random.default_rng(4)
    queries = [list(rng.choice(words, size=int(rng.integers(1, 6)))) for _ in range(300)]
    queries += [["unknown"], [], [words[0]] * 3, [words[1], "unknown", words[1]]]
    allowed = rng.random(index.n_docs) < 0.7
    for query in queries:
        for k, mask in ((1, None), (3, None), (10, None), (10, allowed), (600, None), (600, allowed)):
            index.use_kernel = True
            kernel = index.search(query, k=k, candidate_mask=mask)
            index.use_kernel = False
            numpy_path = index.search(query, k=k, candidate_mask=mask)
            assert kernel[0].tolist() == numpy_path[0].tolist(), (query, k, mask is None)
            assert kernel[1].tolist() == numpy_path[1].tolist(), (query, k, mask is None)


# ------------------------------------------------------------------------------------ fields
def test_fields_sum_their_weighted_bm25() -> None:
    titles, _, words = _zipf_corpus(seed=7, n_docs=400, vocab=60)
    rng = np.random.default_rng(8)
    brands = [[str(rng.choice(words[:10]))] for _ in titles]
    index = BM25Index.build({"title": titles, "brand": brands}, {"title": 1.0, "brand": 2.5})
    by_title, by_brand = BM25Okapi(titles), BM25Okapi(brands)
    for query in (["w1"], ["w2", "w5"], ["w0", "w9", "w30"]):
        expected = by_title.get_scores(query) + 2.5 * by_brand.get_scores(query)
        np.testing.assert_allclose(_full_scores(index, query), expected, rtol=0, atol=1e-6)


def test_field_weight_decides_which_match_ranks_first() -> None:
    fields = {"title": [["华为", "手机"], ["手机", "壳"], ["耳机"]], "brand": [["小米"], ["华为"], ["索尼"]]}
    title_first = BM25Index.build(fields, {"title": 3.0, "brand": 1.0})
    brand_first = BM25Index.build(fields, {"title": 1.0, "brand": 3.0})
    assert title_first.search(["华为"], k=2)[0].tolist() == [0, 1]
    assert brand_first.search(["华为"], k=2)[0].tolist() == [1, 0]
    muted = BM25Index.build(fields, {"brand": 0.0})
    assert muted.search(["索尼"], k=3)[0].tolist() == []


def test_bad_build_and_query_input_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one document"):
        BM25Index.build({"title": []})
    with pytest.raises(ValueError, match="field 'brand' has 1 documents"):
        BM25Index.build({"title": [["a"], ["b"]], "brand": [["x"]]})
    with pytest.raises(ValueError, match="unknown fields"):
        BM25Index.build({"title": [["a"]]}, {"tags": 1.0})
    index = BM25Index.build({"title": [["a"], ["b"]]})
    with pytest.raises(ValueError, match="k must be positive"):
        index.search(["a"], k=0)
    with pytest.raises(ValueError, match="candidate_mask has 1 entries"):
        index.search(["a"], candidate_mask=np.ones(1, dtype=bool))


# ------------------------------------------------------------------------------------ live changes
def test_overlay_add_update_remove_and_filters() -> None:
    docs, p, words = _zipf_corpus(seed=9, n_docs=300, vocab=80)
    docs[5] = ["w40", "w41", "w1"]
    index = BM25Index.build({"title": docs})
    before = index.search(["w40", "w41"], k=3)
    assert before[0][0] == 5

    # a new document with the same tokens as doc 5 scores exactly like it (base idf and avgdl)
    index.upsert(300, {"title": ["w40", "w41", "w1"]})
    ids, scores = index.search(["w40", "w41"], k=3)
    assert ids[:2].tolist() == [5, 300] and scores[0] == pytest.approx(scores[1], abs=1e-12)
    assert index.n_docs == 301

    # a term the base never saw is searchable at once, with the idf of a one-document term
    index.upsert(310, {"title": ["brandnew", "w1"]})
    assert index.search(["brandnew"], k=5)[0].tolist() == [310]
    assert index.n_docs == 311

    # updating a base document drops its old tokens and adds the new ones
    index.upsert(5, {"title": ["w77"]})
    assert 5 not in index.search(["w40", "w41"], k=10)[0]
    assert 5 in index.search(["w77"], k=50)[0]

    # removal takes effect at once, for base and overlay documents alike
    index.remove(300)
    index.remove(5)
    index.remove(9999)  # unknown: nothing to do
    assert 300 not in index.search(["w40", "w41", "w1"], k=400)[0]
    assert 5 not in index.search(["w77"], k=400)[0]

    # a candidate mask (filters, stock) applies to base and overlay documents
    mask = np.zeros(index.n_docs, dtype=bool)
    mask[[310, 7]] = True
    assert set(index.search(["w1", "brandnew"], k=10, candidate_mask=mask)[0]) <= {310, 7}

    # the other documents are untouched by live changes
    fresh = BM25Index.build({"title": docs})
    for query in (["w2"], ["w3", "w4"]):
        ids, scores = index.search(query, k=20)
        ref_ids, ref_scores = fresh.search(query, k=20, candidate_mask=np.arange(fresh.n_docs) != 5)
        np.testing.assert_array_equal(ids, ref_ids)
        np.testing.assert_allclose(scores, ref_scores)


def test_overlay_input_is_checked() -> None:
    index = BM25Index.build({"title": [["a"], ["b"]]})
    with pytest.raises(ValueError, match="non-negative integer"):
        index.upsert(-1, {"title": ["a"]})
    with pytest.raises(ValueError, match="unknown fields"):
        index.upsert(3, {"brand": ["a"]})


# ------------------------------------------------------------------------------------ bundle
def test_save_load_roundtrip_through_a_bundle(tmp_path: Path) -> None:
    fields = {"title": [["华为", "手机", "5g"], ["苹果", "手机"], ["华为", "耳机"]], "brand": [["华为"], ["apple"], ["华为"]]}
    index = BM25Index.build(fields, {"title": 1.0, "brand": 2.0}, k1=1.2, b=0.6, epsilon=0.1)
    with BundleWriter(tmp_path, "app1") as writer:
        index.save(writer, "search")
        path = writer.commit(data_fingerprint="x", config={}, metrics={})
    loaded = BM25Index.load(verify(path), "search")
    for query in (["华为"], ["手机", "华为"], ["apple", "5g", "5g"], ["nothing"]):
        for got, want in zip(loaded.search(query, k=3), index.search(query, k=3)):
            np.testing.assert_array_equal(got, want)
    assert (loaded.k1, loaded.b, loaded.epsilon, loaded.fields) == (1.2, 0.6, 0.1, ("title", "brand"))
    loaded.upsert(3, {"brand": ["apple"]})  # live changes work on a loaded index too
    assert 3 in loaded.search(["apple"], k=5)[0]
    with BundleWriter(tmp_path, "app1") as writer, pytest.raises(ValueError, match="live changes"):
        loaded.save(writer, "search")


# ------------------------------------------------------------------------------------ tokenizer
@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer(["华为", "三只松鼠"])


@pytest.mark.parametrize(("text", "expected"), [
    ("", []),
    ("   \t\n", []),
    ("😀🔥💯", []),
    ("😀华为手机🔥", ["华为", "手机"]),
    ("a\x00b\x07c\u200bd", ["a", "b", "c", "d"]),
    ("'; DROP TABLE items; --", ["drop", "table", "items"]),
    ("1 OR 1=1 /* */", ["1", "or", "1", "1"]),
    ("ＡＢＣ１２３　华为", ["abc123", "华为"]),
    ("Crème brûlée", ["crème", "brûlée"]),
    ("三只松鼠每日坚果", ["三只", "松鼠", "三只松鼠", "每日", "坚果"]),  # search mode adds the parts
    ("4.5寸 12GB+256GB", ["4.5", "寸", "12gb", "256gb"]),
])
def test_tokenizer_edge_cases(tokenizer: Tokenizer, text: str, expected: list[str]) -> None:
    assert tokenizer.tokens(text) == expected


def test_tokenizer_never_raises_on_arbitrary_unicode(tokenizer: Tokenizer) -> None:
    rng = np.random.default_rng(10)
    for _ in range(300):
        codepoints = rng.integers(0, 0x110000, int(rng.integers(0, 40)))
        text = "".join(chr(int(c)) for c in codepoints)  # lone surrogates, private use, controls …
        tokens = tokenizer.tokens(text)
        assert all(t and t.strip() == t for t in tokens)
