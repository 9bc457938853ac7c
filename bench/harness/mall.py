"""The bench mall: a synthetic mall (`generate_mall`) and a bundle of app `bench` trained from it,
prepared once in a work folder and reused while its size and format match, plus the server config
(`minirec.toml`, whose `seed_data` loads the merchant and platform profiles into Redis at start).

Training uses the defaults except 5 hybrid epochs, no tuning and no evaluation (about a minute on 2
cores instead of two; epochs change the quality of the embeddings, not their shape, so the cost of a
request is the same).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.harness import progress
# The bench app and its key are the locust profiles' defaults too. The server listens on 127.0.0.1
# only and the app holds synthetic data.
from locustfiles.target import BENCH_APP as APP, BENCH_KEY  # noqa: F401  (re-exported for bench/*)

ADMIN_KEY = "bench-admin-0123456789"
PLATFORM_KEY = "bench-platform-0123456789"
TRAIN_CONFIG = """# minirec bench serve: defaults, except fewer hybrid epochs (prep time), no evaluation, and ALS
# pinned without tuning, so that every run serves the same kind of model (tuning picks by the clock)
[model]
family = "als"

[tuning]
enabled = false

[hybrid]
epochs = 5

[evaluate]
protocols = []
"""
#: Bumped when what `prepare` writes changes (an older work folder is prepared again).
PREP_FORMAT = 2


@dataclass
class Prepared:
    """The bench mall on disk and the users to send."""

    workdir: Path
    config: Path
    known: list[str]
    cold: list[str]
    unknown: list[str]
    items: list[str]
    info: dict[str, Any]
    #: Distinct logged queries and how often each was searched (for the suggest and search phases).
    queries: dict[str, int]


def prepare(workdir: Path, *, users: int, items: int, events: int, seed: int = 1) -> Prepared:
    """Generate and train the bench mall unless `workdir` already holds it; write minirec.toml and
    users.json (who is who, for the locust profiles)."""
    import pandas as pd

    from offline_training.synth import generate_mall
    from offline_training.train import train
    from recsys import bundle
    from recsys.config import load_config
    from serving.server_config import write_server_config

    workdir.mkdir(parents=True, exist_ok=True)
    data, artifacts, marker = workdir / "data", workdir / "artifacts", workdir / "prep.json"
    wanted = {"format": PREP_FORMAT, "users": users, "items": items, "events": events, "seed": seed}
    info = json.loads(marker.read_text()) if marker.is_file() else {}
    if {k: info.get(k) for k in wanted} != wanted or not bundle_ok(artifacts):
        marker.unlink(missing_ok=True)
        started = time.perf_counter()
        progress(f"prep: generating a mall of {users:,} users, {items:,} items, {events:,} events …")
        summary = generate_mall(data, users=users, items=items, events=events, seed=seed, overwrite=True,
                                progress=False)
        (workdir / "train.toml").write_text(TRAIN_CONFIG, encoding="utf-8")
        shutil.rmtree(artifacts, ignore_errors=True)
        progress("prep: training app 'bench' (hybrid epochs 5, no evaluation; about a minute on 2 cores) …")
        result = train(data, artifacts, APP, config=load_config(workdir / "train.toml"), run_evaluation=False,
                       progress=False)
        info = {**wanted, "interactions": summary["interactions"], "version": result.version,
                "prep_seconds": round(time.perf_counter() - started, 1)}
        marker.write_text(json.dumps(info, indent=2), encoding="utf-8")
    else:
        progress(f"prep: reusing the mall and bundle {info['version']} in {workdir}")
    known = list(bundle.open_current(artifacts, APP).json("users"))
    known_set = set(known)
    platform_ids = pd.read_parquet(data / "platform_profiles.parquet", columns=["user_id"])["user_id"].astype(str)
    cold = [u for u in platform_ids if u not in known_set]
    item_ids = pd.read_parquet(data / "items.parquet", columns=["item_id"])["item_id"].astype(str).tolist()
    unknown = [f"visitor-{i:06d}" for i in range(max(len(cold), 1000))]
    config = workdir / "minirec.toml"
    write_server_config(config, {APP: BENCH_KEY}, ADMIN_KEY, PLATFORM_KEY, artifacts="artifacts",
                        seed_data={APP: "data"})
    # For the locust profiles (locustfiles/README.md): who is who in this mall.
    (workdir / "users.json").write_text(json.dumps({"app": APP, "known": known[:5000], "cold": cold[:5000],
                                                    "items": item_ids[:5000]}), encoding="utf-8")
    info = {**info, "known_users": len(known), "cold_users": len(cold)}
    logged = pd.read_parquet(data / "queries.parquet", columns=["query"])["query"].astype(str)
    queries = {q: int(c) for q, c in logged.str.strip().value_counts().items() if q}
    return Prepared(workdir, config, known, cold, unknown, item_ids, info, queries)


def bundle_ok(artifacts: Path) -> bool:
    """A published bundle of the bench app this code can read (a format change means training again)."""
    from recsys import bundle

    try:
        bundle.open_current(artifacts, APP)
    except bundle.BundleError:
        return False
    return True


def reset_state(workdir: Path) -> None:
    """Fresh Redis data and event log for the next run (earlier runs' purchases would change feeds);
    a redis-server left over by a killed run is stopped first."""
    import psutil

    state = workdir / ".minirec-state"
    settings = state / "redis" / "features.rdb.settings"
    with contextlib.suppress(OSError, ValueError, KeyError, psutil.Error):
        pid = int(Path(json.loads(settings.read_text())["pidfile"]).read_text().strip())
        leftover = psutil.Process(pid)
        if "redis" in leftover.name():
            leftover.terminate()
            leftover.wait(timeout=10)
    shutil.rmtree(state, ignore_errors=True)
