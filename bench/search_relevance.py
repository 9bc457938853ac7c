"""`minirec bench relevance`: what `GET search` answers, on real and logged queries, through a real server.

Each data set is trained into a bundle (`minirec train` without tuning), served by `minirec serve`
(embedded Redis unless REDIS_URL is set) and queried over HTTP, so the whole route is measured:
analysis, pinyin and typo interpretation, fallbacks, filters of hidden and sold-out items.

- **QBQTC dev** (../shared/data/qbqtc): every distinct title is an item; one query per distinct query
  text with at least one title labelled ≥ 1; MRR@10 and Recall@10 of those titles, anonymous. The
  interaction data the trainer needs are random views (search does not use them anonymously).
- **The synthetic mall's search log**: the log and the events are split in time; the bundle is
  trained on the older 80% only and the newer 20% of searches with a click are replayed:
  MRR@10 of the clicked item, anonymous and as the user who searched. Beside it: plain BM25 over
  jieba words (the index alone, no route), and the same held-out queries rewritten as shoppers
  also type them (seeded): full pinyin with and without spaces, pinyin initials, initials mixed
  with characters (`hw手机`), one character replaced by a homophone (same pinyin, as an input
  method's wrong pick), and one edit in ASCII words of five letters or more.
- **Shading for known users**: for 500 users of the training side, whether their shading query,
  searched as them, shows an item of their ground-truth interest categories in the top 10, beside
  the hottest query searched the same way.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.harness.client import HOST  # noqa: E402
from bench.harness.server import running_server  # noqa: E402
from bench.query_variants import VARIANTS, variant  # noqa: E402
from recsys.config import load_config  # noqa: E402
from recsys.item_features import catalog_tokenizer  # noqa: E402
from search.bm25 import ITEM_FIELD_WEIGHTS  # noqa: E402
from search.item_index import LEGACY_ANALYSIS, build_item_index  # noqa: E402
from serving.server_config import write_server_config  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
K = 10
APP = "bench"
KEY = "relevance-bench-key-0123"
ADMIN = "relevance-admin-key-0123"
#: Training without tuning or evaluation: only the search index and a feed for known users matter.
FAST = """
[model]
family = "{family}"
[tuning]
enabled = false
[evaluate]
protocols = []
"""


def _progress(message: str) -> None:
    print(f"[bench relevance] {message}", file=sys.stderr, flush=True)


def reciprocal_rank(ids: Sequence[str], wanted: set[str]) -> tuple[float, float]:
    """(1 / rank of the first wanted id in the top K, share of the wanted ids in the top K)."""
    ranks = [r for r, item in enumerate(ids[:K], 1) if item in wanted]
    return (1.0 / ranks[0] if ranks else 0.0), len(ranks) / len(wanted)


@contextlib.contextmanager
def served(data_dir: Path, workdir: Path, family: str) -> Iterator[Callable[..., dict[str, Any]]]:
    """Train `data_dir` into workdir/artifacts, serve it, and yield `get(route, **params)` for the
    search routes (`get("", q=…)`, `get("/shading", user_id=…)`)."""
    (workdir / "fast.toml").write_text(FAST.format(family=family))
    _progress(f"training {data_dir.name} (search index and a {family} feed, no tuning) …")
    from offline_training.train import train  # training's imports (scipy.stats, optuna, …) only when run

    train(data_dir, workdir / "artifacts", APP, config=load_config(workdir / "fast.toml"), progress=False)
    config = workdir / "minirec.toml"
    write_server_config(config, {APP: KEY}, ADMIN, None, artifacts=str(workdir / "artifacts"))
    with running_server(config, 1, workdir / "server.log", None) as (server, _):
        conn = http.client.HTTPConnection(HOST, server.port, timeout=30)

        def get(route: str, **params: Any) -> dict[str, Any]:
            query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
            conn.request("GET", f"/v1/apps/{APP}/search{route}?{query}", headers={"X-API-Key": KEY})
            response = conn.getresponse()
            body = json.loads(response.read())
            if response.status != 200:
                raise RuntimeError(f"GET search{route} {params} answered {response.status}: {body}")
            return body

        try:
            yield get
        finally:
            conn.close()


# ------------------------------------------------------------------------------------ QBQTC
def qbqtc_folder(path: Path, out: Path, seed: int = 0) -> dict[str, set[str]]:
    """A data folder of QBQTC's distinct titles; returns query → ids of its titles labelled ≥ 1."""
    pairs = pd.read_json(path, lines=True, dtype={"label": int})
    titles = pairs["title"].drop_duplicates().tolist()
    ids = [f"t{i:06d}" for i in range(len(titles))]
    id_of = dict(zip(titles, ids))
    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"item_id": ids, "title": titles, "category": "网页"}).to_parquet(out / "items.parquet")
    rng = np.random.default_rng(seed)  # views for the trainer; anonymous search never reads them
    n = 5000
    pd.DataFrame({"user_id": [f"u{u:04d}" for u in rng.integers(0, 500, n)],
                  "item_id": [ids[i] for i in rng.integers(0, len(ids), n)], "event": "view",
                  "ts": 1_700_000_000 + np.arange(n)}).to_parquet(out / "interactions.parquet")
    relevant = pairs[pairs["label"] >= 1].groupby("query")["title"].agg(lambda s: {id_of[t] for t in s})
    return relevant.to_dict()


def qbqtc_relevance(path: Path, workdir: Path) -> dict[str, Any]:
    relevant = qbqtc_folder(path, workdir / "data")
    rr, recall = [], []
    with served(workdir / "data", workdir, "popularity") as get:
        _progress(f"QBQTC: {len(relevant):,} queries through GET search …")
        for query, wanted in relevant.items():
            body = get("", q=query, n=K)
            r, rec = reciprocal_rank([i["item_id"] for i in body["items"]], wanted)
            rr.append(r)
            recall.append(rec)
    return {"queries": len(rr), "mrr@10": round(float(np.mean(rr)), 4), "recall@10": round(float(np.mean(recall)), 4)}


# ------------------------------------------------------------------------------------ mall log
def split_mall(source: Path, out: Path, share: float = 0.2) -> pd.DataFrame:
    """Copy the mall folder keeping events and searches older than the newest `share` of searches;
    return the held-out searches that clicked an item."""
    queries = pd.read_parquet(source / "queries.parquet")
    cutoff = float(np.quantile(queries["ts"].astype(float), 1 - share))
    out.mkdir(parents=True, exist_ok=True)
    for name in ("items", "merchant_profiles", "platform_profiles"):
        if (source / f"{name}.parquet").exists():
            pd.read_parquet(source / f"{name}.parquet").to_parquet(out / f"{name}.parquet")
    events = pd.read_parquet(source / "interactions.parquet")
    events[events["ts"].astype(float) < cutoff].to_parquet(out / "interactions.parquet")
    queries[queries["ts"].astype(float) < cutoff].to_parquet(out / "queries.parquet")
    held = queries[(queries["ts"].astype(float) >= cutoff) & (queries["clicked_item_id"].fillna("") != "")]
    return held.reset_index(drop=True)


def plain_bm25_ranks(folder: Path, held: pd.DataFrame) -> list[list[str]]:
    """Top-K item ids per held-out query from plain BM25 over jieba words (no route, no filters)."""
    items = pd.read_parquet(folder / "items.parquet")
    tokenizer = catalog_tokenizer(items)
    index = build_item_index(items, tokenizer, LEGACY_ANALYSIS, ITEM_FIELD_WEIGHTS)
    ids = items["item_id"].to_numpy()
    return [ids[index.search(tokenizer.tokens(q), K)[0]].tolist() for q in held["query"]]


def mall_relevance(workdir: Path, seed: int, users: int, items: int, events: int) -> dict[str, Any]:
    _progress(f"generating the mall (seed {seed}) …")
    from offline_training.synth import generate_mall

    generate_mall(workdir / "mall", users=users, items=items, events=events, seed=seed, progress=False)
    held = split_mall(workdir / "mall", workdir / "data")
    rng = np.random.default_rng(seed)
    rewritten = {name: [variant(name, q, rng) for q in held["query"]] for name in VARIANTS}
    out: dict[str, Any] = {"held_out_searches": len(held)}
    plain = plain_bm25_ranks(workdir / "data", held)
    out["plain_bm25_words"] = round(float(np.mean([reciprocal_rank(r, {c})[0]
                                                  for r, c in zip(plain, held["clicked_item_id"])])), 4)
    with served(workdir / "data", workdir, "auto") as get:
        def search(q: str, user_id: str | None = None) -> dict[str, Any]:
            return get("", q=q, n=K, user_id=user_id)

        for who in ("anonymous", "personalized"):
            _progress(f"mall: {len(held):,} held-out searches ({who}) …")
            scores = [reciprocal_rank([i["item_id"] for i in search(q, u if who == "personalized" else None)["items"]],
                                      {c})[0] for q, u, c in zip(held["query"], held["user_id"], held["clicked_item_id"])]
            out[who] = round(float(np.mean(scores)), 4)
        per_variant = {}
        for name, queries in rewritten.items():
            kept = [k for k, q in enumerate(queries) if q is not None]
            if not kept:
                continue
            got = [reciprocal_rank([i["item_id"] for i in search(queries[k])["items"]],
                                   {held["clicked_item_id"][k]})[0] for k in kept]
            same = [reciprocal_rank([i["item_id"] for i in search(held["query"][k])["items"]],
                                    {held["clicked_item_id"][k]})[0] for k in kept]
            per_variant[name] = {"queries": len(kept), "mrr@10": round(float(np.mean(got)), 4),
                                 "typed_right_mrr@10": round(float(np.mean(same)), 4),
                                 "ratio": round(float(np.mean(got) / max(np.mean(same), 1e-9)), 3)}
            _progress(f"  {name}: {per_variant[name]}")
        out["variants_anonymous"] = per_variant
        out["shading"] = shading_hits(get, workdir, seed)
        _progress(f"  shading: {out['shading']}")
    return out


def shading_hits(get: Callable[..., dict[str, Any]], workdir: Path, seed: int, n_users: int = 500) -> dict[str, Any]:
    """Share of known users (sampled from the training side) whose shading query, searched as them,
    shows at least one item of their ground-truth interest categories in the top 10, beside the same
    for the hottest query."""
    truth = pd.read_parquet(workdir / "mall" / "ground_truth.parquet").set_index("user_id")["interests"]
    trained = pd.read_parquet(workdir / "data" / "interactions.parquet")["user_id"].drop_duplicates()
    users = trained.sample(min(n_users, len(trained)), random_state=seed).tolist()
    hot = get("/hot", n=1)["items"]
    hits = {"shading": 0, "hot": 0}
    sources: dict[str, int] = {}
    for user in users:
        wanted = set(str(truth.get(user, "")).split("|")) - {""}
        shading = get("/shading", user_id=user)
        sources[str(shading["source"])] = sources.get(str(shading["source"]), 0) + 1
        for name, query in (("shading", shading["query"]), ("hot", hot[0]["query"] if hot else None)):
            items = get("", q=query, n=K, user_id=user)["items"] if query else []
            hits[name] += any(i["category"].split("/", 1)[0] in wanted for i in items)
    return {"users": len(users), "shading_hit_rate": round(hits["shading"] / len(users), 4),
            "hot_hit_rate": round(hits["hot"] / len(users), 4), "shading_sources": sources}


# ------------------------------------------------------------------------------------ entry points
def run_relevance_bench(json_path: str | Path | None = None, *, workdir: Path, data: Path = DATA, seed: int = 0,
                        users: int = 5000, items: int = 2000, events: int = 200_000) -> dict[str, Any]:
    """Both measurements; the result (also written as JSON to `json_path` if given)."""
    started = time.perf_counter()
    workdir.mkdir(parents=True, exist_ok=True)
    result = {"qbqtc_dev": qbqtc_relevance(data / "qbqtc" / "dev.json", workdir / "qbqtc"),
              "mall_log": mall_relevance(workdir / "mall", seed, users, items, events)}
    result["seconds"] = round(time.perf_counter() - started, 1)
    _progress(json.dumps(result, ensure_ascii=False))
    if json_path is not None:
        Path(json_path).write_text(json.dumps(result, indent=2, ensure_ascii=False), encoding="utf-8")
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", required=True, help="folder for the data folders, bundles and server logs "
                                                          "(must be empty or absent)")
    parser.add_argument("--json", help="write the results to this file")
    parser.add_argument("--data", default=str(DATA), help="folder holding qbqtc/dev.json")
    parser.add_argument("--seed", type=int, default=0, help="seed of the mall and of the rewritten queries")
    parser.add_argument("--users", type=int, default=5000, help="mall users (default 5000)")
    parser.add_argument("--items", type=int, default=2000, help="mall items (default 2000)")
    parser.add_argument("--events", type=int, default=200_000, help="mall events (default 200000)")


def run_from_args(args: argparse.Namespace) -> int:
    workdir = Path(args.workdir)
    if workdir.exists() and any(workdir.iterdir()):
        print(f"error: --workdir {workdir} is not empty", file=sys.stderr)
        return 2
    run_relevance_bench(args.json, workdir=workdir, data=Path(args.data), seed=args.seed, users=args.users,
                        items=args.items, events=args.events)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
