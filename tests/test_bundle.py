"""Bundles appear atomically, are verified against their sha256, and publish/rollback move `current`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from recsys import bundle
from recsys.bundle import BundleError, BundleWriter


def make_version(artifacts, app="shop", value=1.0) -> str:
    with BundleWriter(artifacts, app) as writer:
        writer.save_array("weights", np.full(3, value, dtype=np.float32))
        writer.save_json("ids", ["a", "商品"])
        writer.commit(data_fingerprint="abc", config={"als": {"factors": 8}}, metrics={"ndcg@10": 0.5})
    return writer.version


def test_written_bundle_verifies_and_loads(tmp_path):
    version = make_version(tmp_path)
    loaded = bundle.verify(tmp_path / "shop" / version)
    assert loaded.array("weights").tolist() == [1.0, 1.0, 1.0]
    assert loaded.json("ids") == ["a", "商品"]
    manifest = loaded.manifest
    assert manifest["version"] == version and manifest["data_fingerprint"] == "abc"
    assert set(manifest["files"]) == {"weights.npy", "ids.json"}
    assert all(len(meta["sha256"]) == 64 for meta in manifest["files"].values())


def test_interrupted_write_leaves_no_version_and_no_staging(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with BundleWriter(tmp_path, "shop") as writer:
            writer.save_array("weights", np.ones(3))
            raise KeyboardInterrupt
    assert bundle.versions(tmp_path, "shop") == []
    assert list((tmp_path / "shop").iterdir()) == []
    assert bundle.current_version(tmp_path, "shop") is None


def test_object_arrays_are_refused(tmp_path):
    with BundleWriter(tmp_path, "shop") as writer, pytest.raises(TypeError, match="pickle"):
        writer.save_array("ids", np.array(["a", None], dtype=object))


def test_corrupt_file_is_refused_by_verify_and_publish(tmp_path):
    version = make_version(tmp_path)
    weights = tmp_path / "shop" / version / "weights.npy"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\x00\x00\x00\x40")  # last float 1.0 → 2.0
    with pytest.raises(BundleError, match="weights.npy is corrupt"):
        bundle.verify(tmp_path / "shop" / version)
    with pytest.raises(BundleError, match="corrupt"):
        bundle.publish(tmp_path, "shop", version)
    assert bundle.current_version(tmp_path, "shop") is None


def test_missing_file_and_bad_manifest(tmp_path):
    version = make_version(tmp_path)
    path = tmp_path / "shop" / version
    (path / "ids.json").unlink()
    with pytest.raises(BundleError, match="ids.json listed in the manifest is missing"):
        bundle.verify(path)
    (path / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        bundle.verify(path)


def test_publish_and_rollback_move_current(tmp_path):
    first = make_version(tmp_path, value=1.0)
    second = make_version(tmp_path, value=2.0)
    assert bundle.versions(tmp_path, "shop") == [first, second]
    bundle.publish(tmp_path, "shop", second)
    assert bundle.open_current(tmp_path, "shop").array("weights")[0] == 2.0
    assert bundle.rollback(tmp_path, "shop").version == first
    assert bundle.current_version(tmp_path, "shop") == first
    with pytest.raises(BundleError, match="no valid version older"):
        bundle.rollback(tmp_path, "shop")


@pytest.mark.parametrize("config, message", [
    ({"als": {"factors": 0}}, r"manifest.json: config: als.factors: must be at least 1"),
    ({"als": {"factorz": 8}}, r"manifest.json: manifest.config.als: unknown key 'factorz'"),
    ({"model": {"family": "magic"}}, r"model.family: 'magic' is not one of"),
    ("als", r"manifest.json: 'config' is not a table"),
])
def test_a_manifest_whose_config_fails_the_config_check_is_refused(tmp_path, config, message):
    version = make_version(tmp_path)
    path = tmp_path / "shop" / version / "manifest.json"
    manifest = json.loads(path.read_text())
    path.write_text(json.dumps({**manifest, "config": config}))
    with pytest.raises(BundleError, match=message):
        bundle.verify(tmp_path / "shop" / version)
    with pytest.raises(BundleError, match=message):
        bundle.publish(tmp_path, "shop", version)
    assert bundle.current_version(tmp_path, "shop") is None


def test_rollback_skips_a_corrupt_older_version(tmp_path):
    oldest = make_version(tmp_path)
    broken = make_version(tmp_path)
    newest = make_version(tmp_path)
    (tmp_path / "shop" / broken / "ids.json").write_text(json.dumps(["tampered"]))
    bundle.publish(tmp_path, "shop", newest)
    assert bundle.rollback(tmp_path, "shop").version == oldest


def test_unknown_version_and_bad_app_name(tmp_path):
    make_version(tmp_path)
    with pytest.raises(BundleError, match="has no version"):
        bundle.publish(tmp_path, "shop", "20000101-000000-000000")
    with pytest.raises(ValueError, match="invalid app id"):
        BundleWriter(tmp_path, "../escape")


def test_staging_of_a_dead_training_is_removed_by_the_next(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = socket.gethostname()
    app_dir = tmp_path / "shop"
    abandoned = app_dir / f".staging-20260101-000000-000000-{host}-{int(dead.stdout)}-abc123"
    running = app_dir / f".staging-20260101-000000-000001-{host}-{os.getpid()}-def456"
    elsewhere = app_dir / f".staging-20260101-000000-000002-other-host-{int(dead.stdout)}-ghi789"
    for path in (abandoned, running, elsewhere):
        path.mkdir(parents=True)
        (path / "part.npy").write_bytes(b"x")
    make_version(tmp_path, "shop")
    assert not abandoned.exists()
    assert running.exists() and elsewhere.exists()
