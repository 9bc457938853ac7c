"""serving/server_config.py: every table of minirec.toml and search.toml refuses unknown keys and
wrong types with the file and the dotted key; a good config loads; [apps.x.features] reaches the
feature store (real Redis)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from recsys.rules import DEFAULTS
from serving.app import create_app
from serving.server_config import (SearchSettingsFile, ServerConfigError, load_server_config,
                                   parse_search_settings, write_server_config)

KEY, ADMIN = "demo-key-0123456789", "admin-key-0123456789"


def config_file(tmp_path: Path, extra: str = "", server: str = "") -> Path:
    """A minimal minirec.toml for app `demo`, with `server` lines added to [server] and `extra` appended."""
    path = tmp_path / "minirec.toml"
    write_server_config(path, {"demo": KEY}, ADMIN, None, artifacts=str(tmp_path / "artifacts"))
    text = path.read_text().replace('state_dir = ".minirec-state"', f'state_dir = "{tmp_path / "state"}"')
    path.write_text(text.replace("[server]\n", f"[server]\n{server}\n", 1) + extra)
    return path


def refused(path: Path) -> str:
    with pytest.raises(ServerConfigError) as info:
        load_server_config(path)
    return str(info.value)


def test_a_good_config_with_every_table_loads(tmp_path):
    path = config_file(tmp_path, server="ready_when_degraded = true\nredis_budget_ms = 30", extra="""
[server.overload]
shed_in_flight = 64

[apps.demo.scenes.home]
max_per_category = 2
fatigue_penalty = 0.5
exclude_purchased = true
pinned = ["i1"]
boosted = { i2 = -0.5 }

[apps.demo.experiments.home-feed]
scene = "home"
variants.a = { share = 0.5, strategy = "popularity" }
variants.b = { share = 0.5, max_per_brand = 1 }

[apps.demo.features]
shown_ttl_hours = 2
popularity_max = 1000
weights = { click = 3 }
""")
    config = load_server_config(path)
    assert config.ready_when_degraded and config.redis_budget_ms == 30.0 and config.overload.shed_in_flight == 64
    home = config.apps["demo"].scenes["home"]
    assert (home.max_per_category, home.fatigue_penalty, home.exclude_purchased, home.pinned, home.boosted) == \
        (2, 0.5, True, ("i1",), {"i2": -0.5})
    assert config.apps["demo"].scenes["search"] == DEFAULTS["search"]
    assert [v.name for v in config.apps["demo"].experiments["home"].variants] == ["a", "b"]
    kwargs = config.apps["demo"].features.store_kwargs()
    assert kwargs["shown_ttl_hours"] == 2.0 and kwargs["popularity_max"] == 1000
    assert kwargs["weights"]["click"] == 3.0 and kwargs["weights"]["purchase"] == 10.0  # others keep the default
    assert config.app_for_key(KEY) == "demo"


@pytest.mark.parametrize("server, extra, message", [
    ("redis_budjet_ms = 30", "", "[server] unknown key 'redis_budjet_ms'; known: admin_key_sha256,"),
    ("", "\n[apps.demo.scenes.home]\nmax_per_categroy = 3\n",
     "[apps.demo.scenes.home] unknown key 'max_per_categroy'; known: boosted, exclude_purchased,"),
    ("", "\n[apps.demo.scenes.homepage]\nmax_per_category = 3\n",
     "[apps.demo.scenes] unknown scene 'homepage'; known: home, exclusive"),
    ("", "\n[apps.demo.features]\nshown_ttl = 3\n", "[apps.demo.features] unknown key 'shown_ttl'; known:"),
    ("", "\n[apps.demo.features.weights]\nbuy = 3\n", "[apps.demo.features.weights] unknown key 'buy'; known: cart,"),
    ("", "\n[apps.demo.experiments.e]\nscene = \"home\"\nsplit = 1\n",
     "[apps.demo.experiments.e] unknown key 'split'; known: control, holdout, scene, variants"),
    ("", "\n[metrics]\nport = 9\n", "unknown key 'metrics'; known: apps, privacy, server"),
])
def test_unknown_keys_are_refused_naming_the_file_and_the_table(tmp_path, server, extra, message):
    path = config_file(tmp_path, extra, server)
    assert refused(path).startswith(f"{path}: {message}")


def test_an_unknown_key_of_an_app_table_is_refused(tmp_path):
    path = config_file(tmp_path)
    path.write_text(path.read_text() + "rate_limit = 3\n")  # inside the last table: [apps.demo]
    assert f"{path}: [apps.demo] unknown key 'rate_limit'; known: api_key_sha256, experiments, features," \
        in refused(path)


@pytest.mark.parametrize("server, extra, message", [
    ("ready_when_degraded = \"yes\"", "", "[server] ready_when_degraded: expected true or false, got 'yes' (str)"),
    ("event_stream_name = \"a b\"", "",
     "[server] event_stream_name: expected a name of letters, digits, _ and -, got 'a b' (str)"),
    ("redis_url = 6379", "", "[server] redis_url: expected a string, got 6379 (int)"),
    ("max_body_bytes = 1.5", "", "[server] max_body_bytes: expected a whole number >= 1, got 1.5 (float)"),
    ("", "\n[apps.demo.scenes.home]\nmax_per_category = \"3\"\n",
     "[apps.demo.scenes.home] max_per_category: expected a whole number >= 0, got '3' (str)"),
    ("", "\n[apps.demo.scenes.home]\nexclude_seen = 1\n",
     "[apps.demo.scenes.home] exclude_seen: expected true or false, got 1 (int)"),
    ("", "\n[apps.demo.scenes]\nhome = 3\n", "[apps.demo.scenes.home] expected a table, got 3 (int)"),
    ("", "\n[apps.demo.features]\nhalf_life_hours = 0\n",
     "[apps.demo.features] half_life_hours: expected a number > 0, got 0 (int)"),
    ("", "\n[apps.demo.features.weights]\nclick = true\n",
     "[apps.demo.features.weights] click: expected a number >= 0, got True (bool)"),
])
def test_wrong_types_are_refused_naming_file_key_expected_type_and_value(tmp_path, server, extra, message):
    path = config_file(tmp_path, extra, server)
    assert refused(path) == f"{path}: {message}"


def test_an_app_key_of_the_wrong_type_is_refused(tmp_path):
    path = config_file(tmp_path)
    path.write_text(path.read_text() + "rate_limit_per_second = -1\n")  # inside [apps.demo]
    assert refused(path) == f"{path}: [apps.demo] rate_limit_per_second: expected a whole number >= 0 " \
                            "(0 = no limit), got -1 (int)"


@pytest.mark.parametrize("raw, message", [
    ({"personal_wieght": 0.3}, "search.toml: unknown key 'personal_wieght'; known: blocklist, interpret,"),
    ({"min_coverage": "half"}, "search.toml: min_coverage: expected a number >= 0 and <= 1, got 'half' (str)"),
    ({"personal_weight": 11}, "search.toml: personal_weight: expected a number >= 0 and <= 10, got 11 (int)"),
    ({"interpret": "no"}, "search.toml: interpret: expected true or false, got 'no' (str)"),
    ({"blocklist": "代购"}, "search.toml: blocklist: expected a list of strings, got '代购' (str)"),
])
def test_search_toml_refuses_unknown_keys_and_wrong_types(raw, message):
    with pytest.raises(ServerConfigError) as info:
        parse_search_settings(raw, "search.toml")
    assert str(info.value).startswith(message)


def test_the_search_settings_file_reloads_and_keeps_the_last_good_settings(tmp_path):
    holder = SearchSettingsFile(tmp_path)
    assert holder.get().personal_weight == 0.2  # no file: the defaults
    path = tmp_path / "search.toml"

    def write(text: str, at: float) -> None:
        path.write_text(text, encoding="utf-8")
        os.utime(path, (at, at))
        holder._checked = float("-inf")  # skip the once-a-second wait

    now = time.time()
    write('blocklist = ["代购"]\npersonal_weight = 0.4\n', now)
    assert holder.get().personal_weight == 0.4 and holder.get().blocked("正品代购") and holder.last_error is None
    write('blocklist = ["代购"]\npersonal_weigth = 0.1\n', now + 5)
    assert holder.get().personal_weight == 0.4  # the broken file is not applied
    assert holder.last_error and f"{path}: unknown key 'personal_weigth'" in holder.last_error
    write("personal_weight = 0.1\n", now + 10)
    assert holder.get().personal_weight == 0.1 and holder.last_error is None
    path.unlink()
    holder._checked = float("-inf")
    assert holder.get().personal_weight == 0.2  # removed: the defaults again


def test_feature_settings_reach_the_feature_store(tmp_path, redis_process):
    """Real Redis: the TTLs and weights of [apps.demo.features] are what the server's store uses."""
    path = config_file(tmp_path, "\n[apps.demo.features]\nshown_ttl_hours = 2\npurchased_ttl_days = 7\n"
                                 "weights = { click = 3.5 }\n")
    with TestClient(create_app(load_server_config(path, redis_url=redis_process.url))) as client:
        store = client.app.state.ctx.stores["demo"]
        assert (store.shown_ttl_s, store.purchased_ttl_s) == (7200, 7 * 86400)
        assert store.weights["click"] == 3.5 and store.weights["view"] == 1.0
