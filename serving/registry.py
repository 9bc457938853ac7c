"""Which bundle each app serves, with hot reload.

Serving never trains: it follows each app's `current` pointer. A newly published version is loaded
and verified aside, then swapped in by replacing one reference, so requests in flight finish on the
bundle they started with and none fail. A bundle that fails verification or loading is refused;
the previous one keeps serving and the error is reported by `GET /v1/admin/models`.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable
from typing import Any

from recsys import bundle
from recsys.config import config_from_dict
from recsys.catalog import ServingCatalog
from recsys.models import TrainedModels
from recsys.served import ServedModels
from search.state import SearchState
from serving.server_config import SearchSettingsFile

log = logging.getLogger("minirec.registry")


@dataclass
class LoadedApp(ServedModels):
    """One app's loaded bundle: what the ranking pipeline needs, plus its version and search state."""

    app_id: str = ""
    version: str = ""
    loaded_at: float = field(default_factory=time.time)
    #: Search index, query statistics and direct hits; None for a bundle without a search index.
    search: SearchState | None = None
    #: The app's search.toml (next to its bundles), re-read when it changes.
    search_settings: SearchSettingsFile = field(default=None)  # type: ignore[assignment]  # set by load

    @classmethod
    def load(cls, app_id: str, loaded: bundle.Bundle) -> "LoadedApp":
        models = TrainedModels.load(loaded)
        cfg = config_from_dict(loaded.manifest["config"])
        catalog = ServingCatalog(models, cfg.hybrid.price_bands)
        return cls(models=models, catalog=catalog, event_weights=dict(cfg.events.weights), scopes=cfg.scope_map(),
                   app_id=app_id, version=loaded.version, search=SearchState.load(loaded, catalog),
                   search_settings=SearchSettingsFile(Path(loaded.path).parent))


@dataclass
class AppStatus:
    version: str | None = None
    loaded_at: float | None = None
    last_error: str | None = None
    last_check: float | None = None


class ModelRegistry:
    """The loaded bundle of every configured app."""

    def __init__(self, artifacts: Path, app_ids: list[str]) -> None:
        self.artifacts = artifacts
        self.app_ids = list(app_ids)
        self._apps: dict[str, LoadedApp] = {}
        self._status: dict[str, AppStatus] = {a: AppStatus() for a in app_ids}
        self._pending: dict[str, LoadedApp] = {}
        self._lock = threading.Lock()  # one reload at a time; reads never take it

    def get(self, app_id: str) -> LoadedApp | None:
        return self._apps.get(app_id)

    def ready(self) -> bool:
        return all(a in self._apps for a in self.app_ids)

    def refresh(self, prepare: Callable[[LoadedApp], None] | None = None) -> list[str]:
        """Load every app whose published version differs from the loaded one; returns what changed.

        `prepare` runs on a freshly loaded app before it is swapped in (the server replays the live
        item changes into it, so no request ever sees a hidden item come back)."""
        changed = []
        with self._lock:
            for app_id in self.app_ids:
                status = self._status[app_id]
                status.last_check = time.time()
                try:
                    wanted = bundle.current_version(self.artifacts, app_id)
                except OSError as exc:
                    status.last_error = f"cannot read the current pointer: {exc}"
                    continue
                loaded = self._apps.get(app_id)
                if wanted is None or (loaded is not None and loaded.version == wanted):
                    if wanted is None:
                        status.last_error = f"no published model in {self.artifacts / app_id}"
                    continue
                if status.last_error and status.last_error.startswith(f"refused {wanted}:"):
                    continue  # already refused this version; wait for a new publish
                fresh = self._pending.pop(app_id, None)  # loaded in an earlier round, not yet prepared
                if fresh is None or fresh.version != wanted:
                    try:
                        fresh = LoadedApp.load(app_id, bundle.verify(bundle.app_dir(self.artifacts, app_id) / wanted))
                    except (bundle.BundleError, OSError, ValueError, KeyError) as exc:
                        status.last_error = f"refused {wanted}: {exc}"
                        log.error("app %s: refused version %s, still serving %s: %s", app_id, wanted,
                                  loaded.version if loaded else "nothing", exc)
                        continue
                if prepare is not None:
                    try:
                        prepare(fresh)
                    except Exception as exc:  # noqa: BLE001 - whatever failed, the old bundle is the safer one
                        if loaded is not None:
                            self._pending[app_id] = fresh
                            status.last_error = f"waiting to swap in {wanted}: {exc}"
                            log.warning("app %s: version %s not swapped in yet: %s", app_id, wanted, exc)
                            continue
                        log.warning("app %s: serving %s without its live item changes for now: %s",
                                    app_id, wanted, exc)
                self._apps[app_id] = fresh  # the swap: one reference replaced
                status.version, status.loaded_at, status.last_error = fresh.version, fresh.loaded_at, None
                changed.append(app_id)
                log.info("app %s: serving version %s", app_id, fresh.version)
        return changed

    def status(self) -> list[dict[str, Any]]:
        return [{"app_id": a, "version": s.version, "loaded_at": s.loaded_at, "last_error": s.last_error,
                 "last_check": s.last_check} for a, s in self._status.items()]
