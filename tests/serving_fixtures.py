"""A small trained app and server configs for the serving tests (real data files, real models)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from recsys import bundle

from recsys.config import load_config
from offline_training.synth import generate_mall
from offline_training.train import train
from serving.server_config import ServerConfig, load_server_config, write_server_config

APP_KEY = "shop-key-0123456789"
OTHER_KEY = "other-key-0123456789"
ADMIN_KEY = "admin-key-0123456789"
PLATFORM_KEY = "platform-key-0123456789"

FAST = """
[model]
family = "als"
[tuning]
enabled = false
[als]
factors = 16
iterations = 8
[hybrid]
no_components = 16
epochs = 5
[evaluate]
protocols = []
"""


def build_app(root: Path, family: str = "als") -> Path:
    """Generate a small mall, train app `shop` (known-user model `family`) into root/artifacts; returns root."""
    generate_mall(root / "data", users=600, items=300, events=25_000, seed=5, progress=False)
    (root / "fast.toml").write_text(FAST.replace('family = "als"', f'family = "{family}"'))
    train(root / "data", root / "artifacts", "shop", config=load_config(root / "fast.toml"), progress=False)
    shutil.copytree(root / "artifacts" / "shop", root / "artifacts" / "other")  # a second tenant
    return root


def copy_as_new_version(artifacts: Path, app: str, source: str) -> str:
    """Copy bundle `source` of `app` to a new version (its manifest renamed to match); returns the
    new version, not yet published."""
    version = bundle.new_version()
    shutil.copytree(artifacts / app / source, artifacts / app / version)
    manifest = json.loads((artifacts / app / version / "manifest.json").read_text())
    manifest["version"] = version
    (artifacts / app / version / "manifest.json").write_text(json.dumps(manifest))
    return version


def server_config(root: Path, workdir: Path, redis_url: str | None, scenes: str = "",
                  database_url: str | None = None) -> ServerConfig:
    """A minirec.toml for apps `shop` and `other` (no bundle) with state in `workdir`; the app store
    in `database_url` (default: SQLite in the state folder)."""
    path = workdir / "minirec.toml"
    write_server_config(path, {"shop": APP_KEY, "other": OTHER_KEY}, ADMIN_KEY, PLATFORM_KEY,
                        artifacts=str(root / "artifacts"), seed_data={"shop": str(root / "data")})
    text = path.read_text().replace('state_dir = ".minirec-state"', f'state_dir = "{workdir / "state"}"')
    if database_url:
        text = text.replace("[server]\n", f'[server]\ndatabase_url = "{database_url}"\n', 1)
    path.write_text(text + scenes)
    return load_server_config(path, redis_url=redis_url)
