"""Many apps in one server, for `minirec bench apps` and the many-apps tests: one demo-size bundle
(trained once, cached in a work folder) copied as N apps, and a minirec.toml serving them all.

Copies are hard links of the bundle's files (a thousand copies cost no disk), each app with its own
version folder and `current` pointer, so every app is loaded, verified and mapped on its own.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from bench.harness import progress

#: The demo mall's size (`minirec demo`): what the issue measured per app.
DEMO_USERS, DEMO_ITEMS, DEMO_EVENTS = 3000, 1500, 150_000
ADMIN_KEY = "apps-admin-0123456789"


def app_id(i: int) -> str:
    """The i-th copy's app id."""
    return f"m{i:04d}"


def app_key(i: int) -> str:
    """The i-th copy's API key (synthetic data on 127.0.0.1 only)."""
    return f"apps-bench-key-{i:06d}"


def demo_bundle(workdir: Path) -> Path:
    """The published bundle of app `demo` trained on the demo mall (defaults, no tuning and no
    evaluation, to keep the preparation short), prepared once in `workdir`; returns its folder."""
    from offline_training.synth import generate_mall
    from offline_training.train import train
    from recsys import bundle
    from recsys.config import config_from_dict

    artifacts = workdir / "artifacts"
    try:
        return bundle.open_current(artifacts, "demo").path
    except (bundle.BundleError, OSError, ValueError):
        pass
    progress(f"preparing the demo-size bundle in {workdir} (~1-2 min)")
    generate_mall(workdir / "data", users=DEMO_USERS, items=DEMO_ITEMS, events=DEMO_EVENTS, seed=7,
                  overwrite=True, progress=False)
    config = config_from_dict({"tuning": {"enabled": False}, "evaluate": {"protocols": []}})
    train(workdir / "data", artifacts, "demo", config=config, progress=False, force=True)
    return bundle.open_current(artifacts, "demo").path


def copy_apps(source: Path, artifacts: Path, n: int) -> list[str]:
    """`n` apps in `artifacts`, each a hard-linked copy of bundle folder `source`, published."""
    if artifacts.exists():
        shutil.rmtree(artifacts)
    ids = []
    for i in range(n):
        app = app_id(i)
        version_dir = artifacts / app / source.name
        version_dir.mkdir(parents=True)
        for file in source.iterdir():
            os.link(file, version_dir / file.name)
        (artifacts / app / "current").write_text(source.name + "\n")
        ids.append(app)
    return ids


def write_config(path: Path, artifacts: Path, n: int, max_resident_mb: float) -> Path:
    """A minirec.toml serving apps `app_id(0..n-1)` from `artifacts` with the given memory budget."""
    from serving.server_config import hash_key

    lines = ["[server]", f'artifacts = "{artifacts}"', f'state_dir = "{path.parent / "state"}"',
             "reload_interval_seconds = 2.0", f'admin_key_sha256 = "{hash_key(ADMIN_KEY)}"',
             f"max_resident_mb = {max_resident_mb}"]
    for i in range(n):
        lines += ["", f"[apps.{app_id(i)}]", f'api_key_sha256 = "{hash_key(app_key(i))}"']
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
