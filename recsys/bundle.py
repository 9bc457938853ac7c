"""Versioned model bundles: `ARTIFACTS/<app>/<version>/` with a `manifest.json` and plain files.

Layout and guarantees:
- A bundle is written into a hidden staging folder and renamed into place only when complete,
  so a crashed or interrupted training never leaves a half-written version behind.
- `manifest.json` lists every file with its sha256; `verify` refuses a bundle whose files do not match
  or whose config fails `recsys.config.check_config` (like a config file would).
- `ARTIFACTS/<app>/current` holds the published version's name and is replaced atomically
  (write aside, `os.replace`), so a reader sees either the old or the new version, never a mix.
- Arrays are `.npy` (never pickled), memory-mapped read-only when loaded; everything else is JSON.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recsys.config import ConfigError, check_config, config_from_dict
from recsys.npymap import map_npy

MANIFEST = "manifest.json"
CURRENT = "current"
#: Format 2 added the known-user model's family (`known_model.json`); format 1 bundles held ALS
#: and still load.
FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)
_VERSION_RE = re.compile(r"^\d{8}-\d{6}-\d{6}$")
_APP_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


class BundleError(RuntimeError):
    """A bundle is missing, incomplete or corrupt; the message says which file and why."""


#: App ids that would clash with shared names (Redis keys of the platform's profiles).
RESERVED_APP_IDS = frozenset({"platform"})


def check_app_name(app: str) -> str:
    """App ids are folder names and URL parts: letters, digits, `_` and `-`, at most 64 characters."""
    if not _APP_RE.match(app):
        raise ValueError(f"invalid app id {app!r}: use letters, digits, '_' or '-' (max 64), starting with a letter or digit")
    if app in RESERVED_APP_IDS:
        raise ValueError(f"app id {app!r} is reserved (its Redis keys would clash with the platform's shared profiles)")
    return app


def new_version(now: dt.datetime | None = None) -> str:
    """A version name that sorts by creation time (UTC, microseconds)."""
    now = now or dt.datetime.now(dt.timezone.utc)
    return now.strftime("%Y%m%d-%H%M%S-%f")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def remove_abandoned_staging(app_dir: Path) -> list[Path]:
    """Delete staging folders of trainings that died without cleaning up (SIGKILL, power loss).

    A folder is abandoned when its name says it was made on this host by a process that no longer
    runs; folders of other hosts (a shared artifacts volume) or of live processes are left alone.
    """
    removed = []
    host = socket.gethostname()
    for path in app_dir.glob(".staging-*"):
        match = re.fullmatch(r"\.staging-[0-9-]+-(?P<host>.+)-(?P<pid>\d+)-[^-]+", path.name)
        if match is None or match["host"] != host or _pid_alive(int(match["pid"])):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


class BundleWriter:
    """Writes one bundle. Use as a context manager; `commit()` makes it a visible version.

    Leaving the block without `commit()` (or with an exception) deletes the staging folder.
    """

    def __init__(self, artifacts: str | os.PathLike, app: str) -> None:
        self.app_dir = Path(artifacts) / check_app_name(app)
        self.app = app
        self.version = new_version()
        self._files: dict[str, dict[str, Any]] = {}
        self.path: Path | None = None

    def __enter__(self) -> "BundleWriter":
        self.app_dir.mkdir(parents=True, exist_ok=True)
        remove_abandoned_staging(self.app_dir)
        owner = f"{socket.gethostname()}-{os.getpid()}"
        self.staging = Path(tempfile.mkdtemp(prefix=f".staging-{self.version}-{owner}-", dir=self.app_dir))
        return self

    def _register(self, name: str) -> Path:
        if name in self._files or name == MANIFEST or "/" in name:
            raise ValueError(f"bad or duplicate bundle file name {name!r}")
        self._files[name] = {}
        return self.staging / name

    def save_array(self, name: str, array: np.ndarray) -> None:
        """Save a numeric or fixed-width array as `<name>.npy`."""
        if array.dtype == object:
            raise TypeError(f"{name}: object arrays would need pickle; store strings as JSON")
        path = self._register(f"{name}.npy")
        np.save(path, np.ascontiguousarray(array), allow_pickle=False)

    def save_json(self, name: str, obj: Any) -> None:
        """Save a JSON document as `<name>.json` (UTF-8, Chinese kept readable)."""
        path = self._register(f"{name}.json")
        path.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")

    def save_bytes(self, name: str, data: bytes) -> None:
        """Save a file as-is (reports, plots)."""
        self._register(name).write_bytes(data)

    def commit(self, *, data_fingerprint: str, config: dict[str, Any], metrics: dict[str, Any],
               extra: dict[str, Any] | None = None) -> Path:
        """Write the manifest, fsync, and rename the staging folder to `<app>/<version>/`."""
        for name in self._files:
            path = self.staging / name
            self._files[name] = {"sha256": _sha256(path), "bytes": path.stat().st_size}
        manifest = {
            "format_version": FORMAT_VERSION,
            "app": self.app,
            "version": self.version,
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "data_fingerprint": data_fingerprint,
            "config": config,
            "metrics": metrics,
            "files": self._files,
            **(extra or {}),
        }
        (self.staging / MANIFEST).write_text(json.dumps(manifest, ensure_ascii=False, indent=2), encoding="utf-8")
        for path in self.staging.iterdir():
            with path.open("rb") as fh:
                os.fsync(fh.fileno())
        _fsync_dir(self.staging)
        final = self.app_dir / self.version
        os.rename(self.staging, final)
        _fsync_dir(self.app_dir)
        self.path = final
        return final

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.path is None:
            shutil.rmtree(self.staging, ignore_errors=True)


@dataclass(frozen=True)
class Bundle:
    """A verified bundle on disk."""

    path: Path
    manifest: dict[str, Any]

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    def has(self, name: str) -> bool:
        return name in self.manifest["files"]

    def array(self, name: str, mmap: bool = True) -> np.ndarray:
        """`<name>.npy`, memory-mapped read-only by default (recsys/npymap.py: the workers of a host
        share its pages); `mmap=False` reads a private, writeable copy. Never unpickles."""
        if mmap:
            return map_npy(self.path / f"{name}.npy")
        return np.load(self.path / f"{name}.npy", allow_pickle=False)

    def json(self, name: str) -> Any:
        return json.loads((self.path / f"{name}.json").read_text(encoding="utf-8"))


def verify(path: str | os.PathLike) -> Bundle:
    """Check a bundle folder against its manifest; raise `BundleError` naming what is wrong."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise BundleError(f"{path}: no {MANIFEST} (not a bundle, or an unfinished one)")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{manifest_path}: not valid JSON ({exc})") from exc
    for key in ("format_version", "version", "created_at", "data_fingerprint", "config", "metrics", "files"):
        if key not in manifest:
            raise BundleError(f"{manifest_path}: missing key '{key}'")
    if manifest["format_version"] not in READABLE_FORMATS:
        raise BundleError(f"{manifest_path}: format_version {manifest['format_version']} is not supported "
                          f"(expected one of {READABLE_FORMATS})")
    if not isinstance(manifest["config"], dict):
        raise BundleError(f"{manifest_path}: 'config' is not a table")
    try:  # the manifest's config is checked like a config file: a bundle that would misbehave is refused
        check_config(config_from_dict(manifest["config"]), "config")
    except ConfigError as exc:
        raise BundleError(f"{manifest_path}: {exc}") from exc
    for name, meta in manifest["files"].items():
        file = path / name
        if not file.is_file():
            raise BundleError(f"{path}: file {name} listed in the manifest is missing")
        actual = _sha256(file)
        if actual != meta["sha256"]:
            raise BundleError(f"{path}: file {name} is corrupt (sha256 {actual[:12]}… does not match the manifest's {meta['sha256'][:12]}…)")
    return Bundle(path=path, manifest=manifest)


def app_dir(artifacts: str | os.PathLike, app: str) -> Path:
    return Path(artifacts) / check_app_name(app)


def versions(artifacts: str | os.PathLike, app: str) -> list[str]:
    """Version folders of an app, oldest first (staging folders are not versions)."""
    root = app_dir(artifacts, app)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and _VERSION_RE.match(p.name))


def current_version(artifacts: str | os.PathLike, app: str) -> str | None:
    """The published version, or None if nothing is published yet."""
    pointer = app_dir(artifacts, app) / CURRENT
    if not pointer.is_file():
        return None
    return pointer.read_text(encoding="utf-8").strip() or None


def publish(artifacts: str | os.PathLike, app: str, version: str) -> Bundle:
    """Verify `version` and move the app's `current` pointer to it atomically."""
    root = app_dir(artifacts, app)
    if version not in versions(artifacts, app):
        known = ", ".join(versions(artifacts, app)[-5:]) or "none"
        raise BundleError(f"app {app!r} has no version {version!r} (latest: {known})")
    bundle = verify(root / version)
    _atomic_write_text(root / CURRENT, version + "\n")
    return bundle


def rollback(artifacts: str | os.PathLike, app: str) -> Bundle:
    """Publish the newest valid version older than the current one."""
    current = current_version(artifacts, app)
    if current is None:
        raise BundleError(f"app {app!r} has no published version to roll back from")
    older = [v for v in versions(artifacts, app) if v < current]
    for version in reversed(older):
        try:
            return publish(artifacts, app, version)
        except BundleError:
            continue  # a corrupt older version is skipped, not published
    raise BundleError(f"app {app!r}: no valid version older than {current} to roll back to")


def open_current(artifacts: str | os.PathLike, app: str) -> Bundle:
    """The verified published bundle of an app."""
    version = current_version(artifacts, app)
    if version is None:
        raise BundleError(f"app {app!r} has no published model in {artifacts}; run `minirec train` first")
    return verify(app_dir(artifacts, app) / version)


def apps(artifacts: str | os.PathLike) -> list[str]:
    """Apps that have at least one version."""
    root = Path(artifacts)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and _APP_RE.match(p.name) and versions(root, p.name))
