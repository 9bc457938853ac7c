"""Tuning and the publish gate, end to end through `minirec train` on real files and real models."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pytest

from minirec.cli import main
from offline_training.train import train
from recsys import bundle
from recsys.config import TrainConfig, config_from_dict
from recsys.models import TrainedModels
from recsys.recommend import home_feed
from recsys.rules import DEFAULTS
from recsys.served import ServedModels
from tests.factories import write_csv_folder


def popularity_only_folder(folder: Path, users: int = 300, items: int = 120, per_user: int = 12,
                           seed: int = 0) -> Path:
    """Users who pick items by popularity alone (Zipf), independently: nothing to personalize."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, items + 1) ** 1.1
    p /= p.sum()
    rows = [{"user_id": f"u{u}", "item_id": f"i{i}", "event": "purchase", "ts": str(1_700_000_000 + u * 60)}
            for u in range(users) for i in rng.choice(items, size=per_user, replace=False, p=p)]
    catalog = [{"item_id": f"i{i}", "title": f"item {i}", "category": f"c{i % 5}"} for i in range(items)]
    return write_csv_folder(folder, catalog, rows)


def two_tastes_folder(folder: Path, users: int = 200, seed: int = 0) -> Path:
    """Half the users buy from items 0..29, the others from 30..59: personalization clearly wins."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(users):
        base = 0 if u % 2 else 30
        rows += [{"user_id": f"u{u}", "item_id": f"i{base + i}", "event": "purchase", "ts": str(1_700_000_000 + u)}
                 for i in rng.choice(30, size=8, replace=False)]
    catalog = [{"item_id": f"i{i}", "title": f"item {i}", "category": f"c{i % 4}"} for i in range(60)]
    return write_csv_folder(folder, catalog, rows)


def quick(budget: float = 4.0, **tuning: object) -> TrainConfig:
    cfg = TrainConfig()
    cfg.tuning.budget_seconds, cfg.tuning.budget_seconds_per_million = budget, 0.0
    cfg.evaluate.protocols = []
    for key, value in tuning.items():
        setattr(cfg.tuning, key, value)
    return cfg


def served(artifacts: Path, app: str) -> ServedModels:
    loaded = bundle.open_current(artifacts, app)
    return ServedModels.of(TrainedModels.load(loaded), config_from_dict(loaded.manifest["config"]))


def run_cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(list(args))
    return status, out.getvalue(), err.getvalue()


@pytest.mark.slow
def test_nothing_beats_popularity_so_known_users_get_popularity_with_a_note(tmp_path):
    data = popularity_only_folder(tmp_path / "data")
    result = train(data, tmp_path / "art", "flat", config=quick(budget=6.0), progress=False)
    known = result.tuning.known
    assert known is not None and known.family == "popularity"
    assert len(known.trials) > 20 and "not significant" in known.note
    assert result.published and result.gate is not None and result.gate.passed
    app = served(tmp_path / "art", "flat")
    page = home_feed(app, "u1", None, DEFAULTS["home"], n=5)
    assert page.strategy == "popularity" and "beat popularity" in (page.note or "")
    anonymous = home_feed(app, None, None, DEFAULTS["home"], n=5)
    assert anonymous.strategy == "popularity" and anonymous.note is None


@pytest.mark.slow
def test_personal_tastes_are_found_and_published(tmp_path):
    data = two_tastes_folder(tmp_path / "data")
    result = train(data, tmp_path / "art", "shop", config=quick(), progress=False)
    assert result.tuning.known.family in ("als", "ease", "rp3beta", "itemknn")
    assert result.gate.passed and result.published
    assert result.tuning.known.gain > 3 * result.tuning.known.stderr


@pytest.mark.slow
def test_gate_keeps_a_worse_bundle_unpublished_unless_forced(tmp_path):
    data = two_tastes_folder(tmp_path / "data")
    artifacts = tmp_path / "art"
    good = train(data, artifacts, "shop", config=quick(), progress=False)
    assert bundle.current_version(artifacts, "shop") == good.version
    bad = tmp_path / "bad.toml"  # ALS that can learn nothing: 1 factor, crushed by regularization
    bad.write_text('[model]\nfamily = "als"\n[als]\nfactors = 1\nregularization = 100000.0\n'
                   '[tuning]\nenabled = false\n[evaluate]\nprotocols = []\n')
    status, out, err = run_cli("train", "--data", str(data), "--out", str(artifacts), "--app", "shop",
                               "--config", str(bad), "--quiet")
    assert status == 3, err
    new_version = out.strip().splitlines()[-1]
    assert bundle.current_version(artifacts, "shop") == good.version  # `current` did not move
    assert new_version in bundle.versions(artifacts, "shop")  # the bundle is written, for inspection
    assert "does not beat popularity" in err and f"worse than the published version {good.version}" in err
    status, out, err = run_cli("train", "--data", str(data), "--out", str(artifacts), "--app", "shop",
                               "--config", str(bad), "--quiet", "--force")
    assert status == 0 and "published anyway" in err
    assert bundle.current_version(artifacts, "shop") == out.strip().splitlines()[-1]


@pytest.mark.slow
def test_too_few_users_skip_tuning_and_train_the_defaults(tmp_path, capsys):
    data = two_tastes_folder(tmp_path / "data", users=30)
    status = main(["train", "--data", str(data), "--out", str(tmp_path / "art"), "--app", "tiny", "--no-eval"])
    err = capsys.readouterr().err
    assert status == 0
    assert "tuning: known-user model: only" in err and "tuning.min_validation_users" in err
    manifest = bundle.open_current(tmp_path / "art", "tiny").manifest
    assert manifest["config"]["model"]["family"] == "als"


@pytest.mark.slow
def test_a_budget_too_small_for_one_trial_trains_the_defaults(tmp_path):
    data = two_tastes_folder(tmp_path / "data")
    result = train(data, tmp_path / "art", "shop", config=quick(budget=0.0), progress=False)
    known = result.tuning.known
    assert known is not None and known.trials == [] and "before a trial completed" in known.note
    assert result.config.model.family == "als"
    assert result.config.als.factors == TrainConfig().als.factors


@pytest.mark.slow
def test_no_tune_trains_the_config_as_written(tmp_path):
    data = two_tastes_folder(tmp_path / "data")
    config = tmp_path / "ease.toml"
    config.write_text('[model]\nfamily = "ease"\n[ease]\nl2 = 20.0\n[evaluate]\nprotocols = []\n')
    status, _, err = run_cli("train", "--data", str(data), "--out", str(tmp_path / "art"), "--app", "shop",
                             "--config", str(config), "--no-tune", "--quiet")
    assert status == 0, err
    loaded = bundle.open_current(tmp_path / "art", "shop")
    assert loaded.json("report")["tuning"] == {"protocol": None, "known": None, "cold": None, "repeat": None,
                                               "skipped": []}
    assert loaded.json("known_model") == {"family": "ease", "params": {"l2": 20.0, "neighbours": 500,
                                                                       "max_memory_mb": 2048.0}}


@pytest.mark.slow
@pytest.mark.parametrize("pinned", ["model.family", "ease.l2"])
def test_pinned_values_are_never_searched(tmp_path, pinned):
    data = two_tastes_folder(tmp_path / "data")
    config = tmp_path / "pin.toml"
    text = '[model]\nfamily = "ease"\n' if pinned == "model.family" else '[ease]\nl2 = 33.0\n'
    config.write_text(text + '[tuning]\nbudget_seconds = 3.0\nbudget_seconds_per_million = 0.0\n'
                             '[evaluate]\nprotocols = []\n')
    result = train(data, tmp_path / "art", "shop", config=config, progress=False)
    trials = result.tuning.known.trials
    if pinned == "model.family":
        assert {t.family for t in trials} == {"ease"} and len(trials) > 1
    else:
        assert all(t.params["ease.l2"] == 33.0 for t in trials if t.family == "ease")
