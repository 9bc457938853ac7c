"""A trained app with a home-feed experiment, a real server, and traffic through its API for the
browser tests: the pages then show real responses and real analytics (nothing is faked)."""

from __future__ import annotations

import random
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pandas as pd

from bench.harness.server import ServerProcess
from offline_training.synth import generate_mall
from offline_training.train import train
from recsys.config import load_config
from serving.server_config import load_server_config
from tests.serving_fixtures import APP_KEY, server_config

#: Short tuning and both evaluation protocols, so the dashboard has a tuning report and offline
#: metrics to show (about 10 s on the small mall).
TRAIN_CONFIG = """
[tuning]
budget_seconds = 6.0
budget_seconds_per_million = 0.0
max_trials = 30
cold_folds = 1
[als]
iterations = 8
[hybrid]
no_components = 16
epochs = 5
[evaluate]
protocols = ["stratified", "cold-users"]
"""

#: An A/B test of the home feed (docs/experiments.md), so responses carry experiment and variant.
EXPERIMENT = """
[apps.shop.experiments.home-feed]
scene = "home"
control = "popularity"
variants.popularity = { share = 0.5, strategy = "popularity" }
variants.personalized = { share = 0.5, strategy = "personalized" }
"""

H = {"X-API-Key": APP_KEY}


@dataclass(frozen=True)
class Shop:
    """The trained app's folder, its server, and the users the storefront's presets switch between."""

    root: Path
    server: ServerProcess
    known: str  # many events in the training data, in the personalized variant
    newcomer: str  # a platform profile and no events with this merchant, in the personalized variant

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"


def build_shop(root: Path) -> Path:
    """Generate the small mall and train app `shop` (tuned, evaluated, published) into root/artifacts;
    app `other` gets a copy (the test config has two tenants and the server is ready when both load)."""
    generate_mall(root / "data", users=600, items=300, events=25_000, seed=5, progress=False)
    (root / "train.toml").write_text(TRAIN_CONFIG)
    train(root / "data", root / "artifacts", "shop", config=load_config(root / "train.toml"), progress=False)
    shutil.copytree(root / "artifacts" / "shop", root / "artifacts" / "other")
    return root


def start_shop(root: Path, workdir: Path) -> Shop:
    """Start `minirec serve` on the trained app with the experiment, and pick the preset users."""
    server_config(root, workdir, None, EXPERIMENT)
    # A generous Redis read budget: on a busy test machine a read over the default 50 ms answers
    # degraded (no profile, no recent events), and these tests check personalization, not latency.
    path = workdir / "minirec.toml"
    path.write_text(path.read_text().replace("[server]\n", "[server]\nredis_budget_ms = 2000\n", 1))
    experiment = load_server_config(workdir / "minirec.toml").apps["shop"].experiments["home"]

    def personalized(user: str) -> bool:
        variant = experiment.assign(user)
        return variant is not None and variant.name == "personalized"

    inter = pd.read_parquet(root / "data" / "interactions.parquet")
    counts = inter["user_id"].value_counts()
    known = next(u for u in counts.index if counts[u] >= 30 and personalized(u))
    merchant = set(pd.read_parquet(root / "data" / "merchant_profiles.parquet")["user_id"])
    platform = pd.read_parquet(root / "data" / "platform_profiles.parquet")["user_id"]
    newcomer = next(u for u in platform if u not in counts.index and u not in merchant and personalized(u))
    server = ServerProcess(workdir / "minirec.toml").start()
    return Shop(root, server, str(known), str(newcomer))


def drive_traffic(shop: Shop, users: int = 160, hours: float = 36.0, seed: int = 3) -> int:
    """Simulated shoppers through the HTTP API: each opens the home feed, sees it (impressions with
    the response's request_id), clicks and sometimes buys items of their ground-truth interests, and
    some search. Event times are spread over the last `hours` so the dashboard's time series has a
    shape. Enough users that the popularity variant, whose CTR is a few percent, still gets purchases
    (with 80, it sometimes had none and two of its lifts were undefined). Returns the number of events
    accepted."""
    rng = random.Random(seed)
    truth = pd.read_parquet(shop.root / "data" / "ground_truth.parquet").set_index("user_id")["interests"]
    pool = [u for u in truth.index if u not in (shop.known, shop.newcomer)]
    queries = pd.read_parquet(shop.root / "data" / "queries.parquet")["query"].value_counts().index[:30].tolist()
    now = time.time()
    accepted = 0
    for user in rng.sample(pool, users):
        interests = set(str(truth[user]).split("|"))
        ts = now - rng.uniform(0.05, 1.0) * hours * 3600
        events: list[dict[str, Any]] = []
        status, feed = shop.server.request("GET", f"/v1/apps/shop/recommend/home?user_id={user}&n=10", headers=H)
        assert status == 200, feed
        events += _browse(rng, feed, interests, ts)
        if rng.random() < 0.5:
            query = rng.choice(queries)
            source = rng.choice(["typed", "typed", "hot", "suggest", "discovery", "shading"])
            status, page = shop.server.request(
                "GET", f"/v1/apps/shop/search?q={quote(query)}&user_id={user}&n=10", headers=H)
            assert status == 200, page
            events.append({"type": "search", "query": query, "source": source, "request_id": page["request_id"],
                           "ts": ts + 30})
            events += _browse(rng, page, interests, ts + 31)
        for event in events:
            event.update(event_id=str(uuid.uuid4()), user_id=user)
        status, body = shop.server.request("POST", "/v1/apps/shop/events", {"events": events}, H)
        assert status == 200, body
        accepted += body["accepted"]
    return accepted


def _browse(rng: random.Random, response: dict[str, Any], interests: set[str], ts: float) -> list[dict[str, Any]]:
    """Impressions of a response's items; clicks on those of the user's interests; some purchases."""
    rid = response["request_id"]
    events: list[dict[str, Any]] = []
    for i, item in enumerate(response["items"]):
        events.append({"type": "impression", "item_id": item["item_id"], "request_id": rid, "ts": ts + i * 0.1})
        if item["category"].split("/")[0] in interests and rng.random() < 0.35:
            events.append({"type": "click", "item_id": item["item_id"], "request_id": rid, "ts": ts + 5 + i})
            if rng.random() < 0.3:
                events.append({"type": "purchase", "item_id": item["item_id"], "request_id": rid,
                               "amount": item["price"], "ts": ts + 60 + i})
    return events
