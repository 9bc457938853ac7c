"""`minirec simulate`: the shopper model on a real generated mall, and the whole command against a
real server process with a home and a shading experiment, read back through its analytics."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.harness import ROOT
from bench.harness.client import free_port
from bench.harness.server import ServerProcess
from minirec.cli import build_parser
from minirec.demo import demo_experiments
from minirec.simulate import Behaviour, load_mall, matches, query_matches, sample_users, top_category
from offline_training.synth import CATALOG, generate_mall
from tests.serving_fixtures import APP_KEY, build_app, server_config


@pytest.fixture(scope="module")
def mall_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sim-mall") / "data"
    generate_mall(out, users=400, items=200, events=10_000, seed=3, progress=False)
    return out


def test_an_item_matches_when_its_top_category_is_an_interest(mall_dir):
    """On the generated mall: every user's interests are top categories of the catalog, and an item
    matches exactly the users whose interests hold the part of its category path before '/'."""
    mall = load_mall(mall_dir)
    items = pd.read_parquet(mall_dir / "items.parquet")
    tops = set(CATALOG)
    assert all(interests <= tops for interests in mall.interests.values())
    user = next(u for u, i in mall.interests.items() if len(i) >= 2)
    for category in items["category"]:
        assert matches(category, mall.interests[user]) == (category.split("/")[0] in mall.interests[user])
    assert top_category("数码/手机") == "数码" and top_category(None) == "" and not matches(None, frozenset({"数码"}))


def test_the_mall_gives_known_users_and_the_leaf_names_they_type(mall_dir):
    mall = load_mall(mall_dir)
    truth = pd.read_parquet(mall_dir / "ground_truth.parquet")
    inter = pd.read_parquet(mall_dir / "interactions.parquet")
    assert mall.known == set(inter["user_id"]) and set(mall.interests) == set(truth["user_id"])
    for top, leaves in mall.leaves.items():
        assert set(leaves) <= set(CATALOG[top][3]), top  # subcategory names of that top category


def test_the_user_sample_is_seeded_and_holds_the_asked_share_of_first_visits(mall_dir):
    mall = load_mall(mall_dir)
    a = sample_users(mall, 50, 0.0, np.random.default_rng([7, 0]))
    b = sample_users(mall, 50, 0.0, np.random.default_rng([7, 0]))
    assert a == b and len({u.user_id for u in a}) == 50 and all(u.known and u.interests for u in a)
    mixed = sample_users(mall, 40, 0.25, np.random.default_rng(1))
    assert sum(not u.known for u in mixed) == 10
    assert all(u.user_id not in mall.known for u in mixed if not u.known)
    with pytest.raises(ValueError, match="known"):
        sample_users(mall, 10_000, 0.0, np.random.default_rng(1))


def test_clicks_favour_matching_items_and_fall_with_position():
    b = Behaviour()
    assert b.click_probability(True, 0) == pytest.approx(0.30) and b.click_probability(False, 0) == pytest.approx(0.04)
    assert all(b.click_probability(m, p) > b.click_probability(m, p + 1) for m in (True, False) for p in range(20))
    assert b.buy_probability(True) > b.buy_probability(False)


def test_a_query_matches_when_at_least_half_of_its_results_do():
    fan = frozenset({"数码"})
    assert query_matches(["数码/手机"] * 5 + ["家电/空调"] * 5, fan)
    assert not query_matches(["数码/手机"] * 4 + ["家电/空调"] * 6, fan)
    assert not query_matches([], fan)


def test_help_explains_every_option():
    sub = build_parser()._subparsers._group_actions[0].choices["simulate"]
    for action in sub._actions:
        if action.option_strings and action.dest != "help":
            assert action.help and len(action.help) > 10, action.dest


def run_simulate(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "minirec.cli", "simulate", "--quiet", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def test_no_server_is_a_clear_error_with_status_2(mall_dir):
    done = run_simulate("--base", f"http://127.0.0.1:{free_port()}", "--app", "shop", "--api-key", "k",
                        "--data", str(mall_dir), "--users", "3")
    assert done.returncode == 2
    assert "is the server running at http://127.0.0.1:" in done.stderr and "Traceback" not in done.stderr


EXPERIMENTS = demo_experiments("shop")  # the two experiments `minirec demo` runs


def interval_ok(metric: dict) -> bool:
    value, (lo, hi) = metric["value"], metric["ci95"]
    return all(math.isfinite(x) for x in (value, lo, hi)) and lo <= value <= hi


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> Path:
    return build_app(tmp_path_factory.mktemp("sim-shop"))


def serve(shop: Path, workdir: Path, extra: str = "") -> ServerProcess:
    workdir.mkdir()
    server_config(shop, workdir, None, extra)  # writes workdir/minirec.toml
    return ServerProcess(workdir / "minirec.toml").start()


def simulate_against(server: ServerProcess, shop: Path, out: Path, *args: str) -> subprocess.CompletedProcess:
    return run_simulate("--base", f"http://127.0.0.1:{server.port}", "--app", "shop", "--api-key", APP_KEY,
                        "--data", str(shop / "data"), "--json", str(out), *args)


@pytest.mark.slow
def test_simulated_shoppers_see_the_personalized_home_feed_win(shop, tmp_path):
    """A real server with a home experiment (popularity vs personalized) and a shading experiment
    (hot vs personal): the JSON has every lift with a finite value inside its interval, and the
    personalized feed's CTR beats popularity's (a large effect on the synthetic mall)."""
    server = serve(shop, tmp_path / "work", EXPERIMENTS)
    try:
        started = time.monotonic()
        done = simulate_against(server, shop, tmp_path / "sim.json", "--users", "160", "--sessions", "2", "--seed", "1")
        elapsed = time.monotonic() - started
    finally:
        server.stop()
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "sim.json").read_text())
    for key in ("ctr_lift", "gmv_lift", "exposure_per_user_lift", "search_pv_ratio"):
        assert interval_ok(result[key]), (key, result[key])
    assert result["experiment"] == "home-feed" and result["shading_experiment"] == "shading-word"
    variants = result["variants"]
    assert set(variants) == {"popularity", "personalized"}
    assert variants["personalized"]["ctr"]["value"] > variants["popularity"]["ctr"]["value"]
    assert result["ctr_lift"]["value"] > 0 and result["ctr_lift"]["ci95"][0] > 0
    simulation = result["simulation"]
    # a degraded answer (a Redis read over its budget, an overloaded worker) carries no variant: on a
    # busy 2-core machine some happen (2.3% with a benchmark running beside it), which is the overload
    # behaviour working, not a broken split
    assert simulation["users"] == 160 and simulation["degraded_responses"] <= 0.05 * simulation["requests"]
    assert sum(simulation["users_by_variant"]["home"].values()) == 160
    assert "home-feed" in done.stdout and "ctr_lift" in done.stdout
    print(f"simulate: 160 users × 2 sessions against the server in {elapsed:.1f} s")  # measured, not a pass mark


@pytest.mark.slow
def test_without_a_home_experiment_it_says_so_and_still_writes_the_totals(shop, tmp_path):
    server = serve(shop, tmp_path / "work")
    try:
        done = simulate_against(server, shop, tmp_path / "sim.json", "--users", "6", "--sessions", "1")
    finally:
        server.stop()
    assert done.returncode == 2 and "no experiment on scene home" in done.stderr, done.stderr[-3000:]
    result = json.loads((tmp_path / "sim.json").read_text())
    assert result["ctr_lift"] is None and result["variants"] == {}
    assert result["events"]["by_type"]["impression"] >= 6 * 20  # each user's home page at least
    assert any(row["scene"] == "home" for row in result["scenes"])
