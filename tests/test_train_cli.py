"""End to end through the CLI, as an ML engineer runs it: synth → train → bundle → models → evaluate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from minirec.cli import main
from offline_training.datafolder import load_data_folder
from recsys import bundle
from recsys.config import config_from_dict
from recsys.models import TrainedModels
from recsys.recommend import home_feed, related_shelf
from recsys.rules import DEFAULTS
from recsys.served import ServedModels
from recsys.user_state import UserState

FAST_CONFIG = """
[als]
factors = 16
iterations = 8
[hybrid]
no_components = 16
epochs = 8
[tuning]
budget_seconds = 12.0
budget_seconds_per_million = 0.0
cold_share = 0.5
[evaluate]
protocols = ["stratified", "cold-users", "cold-items", "last-out"]
"""


def served(artifacts: Path, app: str = "shop") -> ServedModels:
    loaded = bundle.open_current(artifacts, app)
    return ServedModels.of(TrainedModels.load(loaded), config_from_dict(loaded.manifest["config"]))


def platform_state(profile: dict) -> UserState:
    return UserState([], set(), {}, set(), {}, {k: str(v) for k, v in profile.items()})


@pytest.fixture(scope="module")
def mall(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mall") / "data"
    assert main(["data", "synth", "--out", str(out), "--users", "800", "--items", "300",
                 "--events", "30000", "--seed", "3"]) == 0
    return out


@pytest.fixture(scope="module")
def trained(mall, tmp_path_factory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("art")
    config = root / "fast.toml"
    config.write_text(FAST_CONFIG)
    artifacts = root / "artifacts"
    import contextlib
    import io
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert main(["train", "--data", str(mall), "--out", str(artifacts), "--app", "shop",
                     "--config", str(config), "--quiet"]) == 0
    version = stdout.getvalue().strip().splitlines()[-1]
    return artifacts, version


@pytest.mark.slow
def test_train_prints_the_version_and_publishes_a_verified_bundle(trained):
    artifacts, version = trained
    assert bundle.current_version(artifacts, "shop") == version
    loaded = bundle.open_current(artifacts, "shop")
    manifest = loaded.manifest
    assert {"version", "created_at", "data_fingerprint", "config", "metrics", "files"} <= set(manifest)
    assert {"report.md", "report.png", "report.json", "known_model.json", "catalog.json"} <= set(manifest["files"])
    assert set(manifest["metrics"]) == {"stratified", "cold-users", "cold-items", "last-out"}
    assert manifest["config"]["als"]["factors"] == 16  # pinned by the config file, never searched
    assert manifest["config"]["model"]["family"] in ("als", "ease", "rp3beta", "itemknn")
    assert manifest["gate"]["passed"] is True
    assert not any(p.name.endswith(".pkl") for p in loaded.path.iterdir())


@pytest.mark.slow
def test_models_beat_popularity_on_the_synthetic_mall(trained):
    artifacts, _ = trained
    metrics = bundle.open_current(artifacts, "shop").manifest["metrics"]
    for protocol in ("stratified", "cold-users", "cold-items"):
        assert metrics[protocol]["model"]["ndcg@10"] > metrics[protocol]["popularity"]["ndcg@10"], protocol


@pytest.mark.slow
def test_train_reports_every_trial_and_the_winner(trained):
    artifacts, _ = trained
    loaded = bundle.open_current(artifacts, "shop")
    report = loaded.json("report")
    known = report["tuning"]["known"]
    assert len(known["trials"]) >= 4  # at least the config's own values of every family
    assert {t["family"] for t in known["trials"]} >= {"als", "ease", "rp3beta", "itemknn"}
    finalists = known["finalists"]  # the best of each family, judged again on a second split
    assert {f["family"] for f in finalists} == {t["family"] for t in known["trials"] if t["state"] == "complete"}
    winner = max(finalists, key=lambda f: f["search"] + f["final"])
    assert (known["family"], known["value"]) == (winner["family"], winner["search"])
    assert loaded.manifest["config"]["model"]["family"] == known["family"]
    assert all(t["params"]["als.factors"] == 16 for t in known["trials"] if t["family"] == "als")  # pinned
    markdown = (loaded.path / "report.md").read_text()
    assert "## Tuning" in markdown and f"**Winner: {known['family']}**" in markdown and "## Publish gate" in markdown
    assert report["tuning"]["cold"]["settings"]["coldstart.hybrid_weight"] is not None


@pytest.mark.slow
def test_each_kind_of_user_gets_its_path(trained, mall):
    artifacts, _ = trained
    app = served(artifacts)
    models = app.models
    known = models.users.ids[0]
    page = home_feed(app, known, None, DEFAULTS["home"], n=10)
    assert page.strategy.split("+")[0] == models.known.family and len(page.items) == 10
    user = models.users.get(known)
    history = {models.items.ids[i] for i in models.user_items[user].indices}
    bought = {models.items.ids[i] for i in models.repeat.counts[user].indices}
    if models.repeat.settings.mix_weight <= 0:
        bought = set()  # without a learned repeat mix, purchases are excluded like everything seen
    assert not (history - bought) & {i.item_id for i in page.items}  # only repurchases come back
    data = load_data_folder(mall)
    newcomer = data.platform_profiles[~data.platform_profiles["user_id"].isin(models.users.index)].iloc[0]
    assert home_feed(app, newcomer["user_id"], platform_state(newcomer.to_dict()), DEFAULTS["home"], n=10).strategy \
        == "hybrid"
    assert home_feed(app, "nobody", None, DEFAULTS["home"], n=10).strategy == "popularity"
    anchor = page.items[0].item_id
    related = related_shelf(app, anchor, None, None, DEFAULTS["related"], n=5)
    assert len(related.items) == 5 and anchor not in {i.item_id for i in related.items}


@pytest.mark.slow
def test_first_visit_recommendations_follow_the_platform_interests(trained, mall):
    """Ground truth: hybrid picks for profile-only users land in their true interest categories."""
    artifacts, _ = trained
    app = served(artifacts)
    data = load_data_folder(mall)
    truth = pd.read_parquet(mall / "ground_truth.parquet").set_index("user_id")
    top_category = app.models.catalog.set_index("item_id")["category"].str.split("/").str[0]
    platform = data.platform_profiles
    consented = platform[platform["consent"].str.contains("interests")].head(150)
    hybrid_hits, popular_hits = [], []
    rules = DEFAULTS["home"]
    popular = [i.item_id for i in home_feed(app, None, None, rules, n=10).items]
    for row in consented.to_dict("records"):
        interests = set(truth.loc[row["user_id"], "interests"].split("|"))
        picks = [i.item_id for i in home_feed(app, "visitor", platform_state(row), rules, n=10).items]
        hybrid_hits.append(np.mean([top_category[i] in interests for i in picks]))
        popular_hits.append(np.mean([top_category[i] in interests for i in popular]))
    assert np.mean(hybrid_hits) > 1.5 * np.mean(popular_hits)


@pytest.mark.slow
def test_models_list_publish_rollback_and_verify(trained, capsys):
    artifacts, first = trained
    bundle_dir = bundle.app_dir(artifacts, "shop")
    # a second version written by hand-copying the first: publishing and rollback only look at versions
    import shutil
    second = bundle.new_version()
    shutil.copytree(bundle_dir / first, bundle_dir / second)
    manifest = json.loads((bundle_dir / second / "manifest.json").read_text())
    manifest["version"] = second
    (bundle_dir / second / "manifest.json").write_text(json.dumps(manifest))
    a = str(artifacts)
    assert main(["models", "--artifacts", a, "publish", "shop", second]) == 0
    assert main(["models", "--artifacts", a, "list"]) == 0
    listing = capsys.readouterr().out
    assert f"* {second}" in listing and f"  {first}" in listing
    assert main(["models", "--artifacts", a, "rollback", "shop"]) == 0
    assert bundle.current_version(artifacts, "shop") == first
    (bundle_dir / second / "catalog.json").write_text("{}")
    assert main(["models", "--artifacts", a, "publish", "shop", second]) == 2
    assert "catalog.json is corrupt" in capsys.readouterr().err
    assert bundle.current_version(artifacts, "shop") == first
    assert main(["models", "--artifacts", a, "verify", "shop"]) == 0


@pytest.mark.slow
def test_evaluate_writes_the_json_contract(mall, tmp_path, capsys):
    config = tmp_path / "fast.toml"
    config.write_text(FAST_CONFIG)
    out = tmp_path / "eval.json"
    assert main(["evaluate", "--data", str(mall), "--protocol", "cold-users", "--k", "10", "--seed", "1",
                 "--json", str(out), "--config", str(config), "--quiet"]) == 0
    report = json.loads(out.read_text())
    keys = {"ndcg@10", "precision@10", "recall@10", "map@10", "hr@10", "coverage"}
    assert set(report["model"]) == keys and set(report["popularity"]) == keys
    assert report["protocol"] == "cold-users" and report["n_users"] > 0
    assert report["tuning"]["cold"]["trials"]  # tuned on the training side of the split
    assert "ndcg@10" in capsys.readouterr().out


def test_bad_data_is_refused_and_nothing_is_written(mall, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    items = pd.read_parquet(mall / "items.parquet")
    items.to_csv(bad / "items.csv", index=False)
    inter = pd.read_parquet(mall / "interactions.parquet").head(50)
    inter.loc[7, "event"] = "teleport"
    inter.to_csv(bad / "interactions.csv", index=False)
    artifacts = tmp_path / "artifacts"
    assert main(["train", "--data", str(bad), "--out", str(artifacts), "--app", "shop", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "interactions.csv, row 9, column 'event': unknown event" in err
    assert not artifacts.exists() or bundle.versions(artifacts, "shop") == []


def test_bad_config_is_refused(mall, tmp_path, capsys):
    config = tmp_path / "typo.toml"
    config.write_text("[als]\nfactor = 3\n")
    assert main(["train", "--data", str(mall), "--out", str(tmp_path), "--app", "shop", "--config",
                 str(config), "--quiet"]) == 2
    assert "unknown key 'factor'" in capsys.readouterr().err


def test_config_values_are_checked(tmp_path):
    from recsys.config import ConfigError, load_config
    config = tmp_path / "bad.toml"
    config.write_text('[als]\nweighting = "magic"\n[evaluate]\nprotocols = ["random"]\n[events.weights]\nlike = 1.0\n')
    with pytest.raises(ConfigError) as info:
        load_config(config)
    message = str(info.value)
    assert "als.weighting" in message and "evaluate.protocols" in message and "unknown event types ['like']" in message


def test_printed_defaults_are_a_valid_config_that_pins_nothing(tmp_path, capsys):
    """The printed config is the defaults, commented out: copied as is it pins nothing; every line
    uncommented gives the same values, all pinned."""
    from recsys.config import TrainConfig, load_config
    assert main(["train", "--print-config"]) == 0
    text = capsys.readouterr().out
    path = tmp_path / "defaults.toml"
    path.write_text(text)
    assert load_config(path).to_dict() == TrainConfig().to_dict() and not load_config(path).pinned
    import re
    setting = re.compile(r'^# ("[^"]+"|\w+) = ')
    uncommented = "\n".join(line[2:] if setting.match(line) else line for line in text.splitlines())
    path.write_text(uncommented)
    everything = load_config(path)
    assert everything.to_dict() == TrainConfig().to_dict()
    assert {"als.factors", "ease.l2", "model.family", "tuning.budget_seconds"} <= everything.pinned


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["tuning", "writing"])
@pytest.mark.parametrize("sig", ["SIGINT", "SIGKILL"])
def test_interrupted_training_publishes_nothing(trained, mall, tmp_path, sig, stage):
    """Stop a real `minirec train` process while it tunes or writes its bundle: no new version,
    `current` untouched."""
    import os
    import signal
    import subprocess
    import sys
    import time

    artifacts, version = trained
    before = bundle.versions(artifacts, "shop")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    log, config = tmp_path / "train.log", tmp_path / "fast.toml"
    config.write_text(FAST_CONFIG)
    with log.open("w") as err:
        # a shell's background job starts with SIGINT ignored, and Python then keeps ignoring it:
        # restore the default so the test means the same wherever it runs
        proc = subprocess.Popen([sys.executable, "-m", "minirec.cli", "train", "--data", str(mall), "--out",
                                 str(artifacts), "--app", "shop", "--no-eval", "--config", str(config)],
                                env=env, stdout=subprocess.DEVNULL, stderr=err,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    def reached() -> bool:
        if stage == "tuning":
            return "tuning the known-user model" in log.read_text()
        return any(p.name.startswith(".staging-") for p in (artifacts / "shop").iterdir())

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not reached():
        if proc.poll() is not None:
            pytest.fail(f"training ended before it could be interrupted: {log.read_text()[-500:]}")
        time.sleep(0.01)
    if stage == "tuning":
        time.sleep(1.0)  # into the search itself
    proc.send_signal(getattr(signal, sig))
    proc.wait(timeout=60)
    assert proc.returncode != 0
    assert bundle.versions(artifacts, "shop") == before
    assert bundle.current_version(artifacts, "shop") == version
    if sig == "SIGINT":  # a clean stop also removes its staging folder
        assert not [p for p in (artifacts / "shop").iterdir() if p.name.startswith(".staging-")]
