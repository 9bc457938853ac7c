"""Which bundle each app serves: loaded on first use, evicted under a memory budget, hot-reloaded.

Serving never trains: it follows each app's `current` pointer. An app is loaded when it is first
asked for (`get`), not at start, so a server with a thousand apps is ready at once; concurrent first
requests of one app wait for a single load. Resident apps are evicted, least recently used first,
when their estimated memory exceeds `[server] max_resident_mb` (0: no budget), and loaded again on
their next request. A newly published version of a resident app is loaded and verified aside, then
swapped in by replacing one reference, so requests in flight finish on the bundle they started with
and none fail. A bundle that fails verification or loading is refused; the previous one keeps
serving and the error is reported by `GET /v1/admin/models`.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recsys import bundle
from recsys.catalog import ServingCatalog
from recsys.config import config_from_dict
from recsys.models import TrainedModels
from recsys.served import ServedModels
from search.state import SearchState
from serving.server_config import SearchSettingsFile

log = logging.getLogger("minirec.registry")

#: Private memory of a loaded app per byte of its bundle's JSON (catalog, id maps, vocabularies,
#: query statistics become DataFrames, dicts and indexes): measured 5.1 MB from 0.47 MB of JSON on
#: the demo bundle (tracemalloc). Mapped arrays count once, at their size on disk.
JSON_EXPANSION = 11.0


def estimate_mb(loaded: bundle.Bundle) -> float:
    """What an app of this bundle holds in memory, in MB: its arrays (mapped: resident once
    touched, though shared by the workers) plus its JSON times `JSON_EXPANSION`."""
    total = 0.0
    for name, meta in loaded.manifest["files"].items():
        if name.endswith(".npy"):
            total += meta["bytes"]
        elif name.endswith(".json"):
            total += JSON_EXPANSION * meta["bytes"]
    return total / 2**20


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
    #: Estimated memory (MB), what the registry's budget counts.
    size_mb: float = 0.0

    @classmethod
    def load(cls, app_id: str, loaded: bundle.Bundle) -> "LoadedApp":
        models = TrainedModels.load(loaded)
        cfg = config_from_dict(loaded.manifest["config"])
        catalog = ServingCatalog(models, cfg.hybrid.price_bands)
        return cls(models=models, catalog=catalog, event_weights=dict(cfg.events.weights), scopes=cfg.scope_map(),
                   app_id=app_id, version=loaded.version, search=SearchState.load(loaded, catalog),
                   search_settings=SearchSettingsFile(Path(loaded.path).parent), size_mb=estimate_mb(loaded))


@dataclass
class AppStatus:
    version: str | None = None
    loaded_at: float | None = None
    last_error: str | None = None
    last_check: float | None = None
    #: Monotonic time of the last request (`get`), for least-recently-used eviction.
    last_used: float = 0.0
    loads: int = 0
    evictions: int = 0


class _Loading:
    """One load in progress: the first caller loads, the others wait for its result."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: LoadedApp | None = None


class ModelRegistry:
    """The resident bundles of the apps, loaded on demand by app id (`get`)."""

    def __init__(self, artifacts: Path, app_ids: list[str] | tuple[str, ...] = (), max_resident_mb: float = 0.0,
                 prepare: Callable[[LoadedApp], None] | None = None) -> None:
        self.artifacts = Path(artifacts)
        #: The apps known at start (listed by `status` before their first request); any other app id
        #: with a published bundle is loaded on request too.
        self.app_ids = list(app_ids)
        self.max_resident_mb = float(max_resident_mb)
        #: Runs on a freshly loaded app before it is served (the server replays the live item changes
        #: into it, so no request ever sees a hidden item come back).
        self.prepare = prepare
        self._apps: dict[str, LoadedApp] = {}
        self._status: dict[str, AppStatus] = {a: AppStatus() for a in self.app_ids}
        self._pending: dict[str, LoadedApp] = {}
        self._loading: dict[str, _Loading] = {}
        self._lock = threading.Lock()  # guards the dicts; never held while loading
        self._reload = threading.Lock()  # one refresh at a time

    # --- requests -------------------------------------------------------------------------------
    def resident(self, app_id: str) -> LoadedApp | None:
        """The app's loaded bundle if it is in memory now (never loads)."""
        return self._apps.get(app_id)

    def get(self, app_id: str) -> LoadedApp | None:
        """The app's loaded bundle, loading it first if it is not resident (the caller waits; a
        concurrent caller of the same app waits for the same load). None when the app has no
        published bundle, or its bundle was refused (see `status`)."""
        loaded = self._apps.get(app_id)
        if loaded is not None:
            status = self._status.get(app_id)
            if status is not None:
                status.last_used = time.monotonic()
            return loaded
        return self._load_once(app_id)

    def _load_once(self, app_id: str) -> LoadedApp | None:
        with self._lock:
            loaded = self._apps.get(app_id)
            if loaded is not None:
                return loaded
            loading = self._loading.get(app_id)
            owner = loading is None
            if owner:
                loading = self._loading[app_id] = _Loading()
                status = self._status.setdefault(app_id, AppStatus())
        if not owner:
            loading.done.wait()
            return loading.result
        try:
            loading.result = self._load_resident(app_id, status)
        finally:
            with self._lock:
                del self._loading[app_id]
            loading.done.set()
        return loading.result

    def _load_resident(self, app_id: str, status: AppStatus) -> LoadedApp | None:
        status.last_check = time.time()
        try:
            wanted = bundle.current_version(self.artifacts, app_id)
        except (OSError, ValueError) as exc:
            status.last_error = f"cannot read the current pointer: {exc}"
            return None
        if wanted is None:
            status.last_error = f"no published model in {self.artifacts / app_id}"
            return None
        if status.last_error and status.last_error.startswith(f"refused {wanted}:"):
            return None  # this version was refused already; wait for a new publish
        fresh = self._load_version(app_id, wanted, status, None)
        if fresh is None:
            return None
        if self.prepare is not None:
            try:
                self.prepare(fresh)
            except Exception as exc:  # noqa: BLE001 - serve the bundle; the item sync catches up later
                log.warning("app %s: serving %s without its live item changes for now: %s", app_id, wanted, exc)
        self._install(app_id, fresh, status)
        return fresh

    def _load_version(self, app_id: str, version: str, status: AppStatus, serving: LoadedApp | None) -> LoadedApp | None:
        try:
            fresh = LoadedApp.load(app_id, bundle.verify(bundle.app_dir(self.artifacts, app_id) / version))
        except (bundle.BundleError, OSError, ValueError, KeyError) as exc:
            status.last_error = f"refused {version}: {exc}"
            log.error("app %s: refused version %s, still serving %s: %s", app_id, version,
                      serving.version if serving else "nothing", exc)
            return None
        # what is left of the load is garbage of the young generations: collect it, then move the
        # app out of the collector's reach (full collections would walk its ~20k objects per app;
        # it has no reference cycles, so it is freed by reference counting when evicted)
        gc.collect(1)
        gc.freeze()
        return fresh

    def _install(self, app_id: str, fresh: LoadedApp, status: AppStatus) -> None:
        """Make `fresh` the app's resident bundle (one reference replaced), then keep the budget."""
        with self._lock:
            self._apps[app_id] = fresh
            status.version, status.loaded_at, status.last_error = fresh.version, fresh.loaded_at, None
            status.last_used = time.monotonic()
            status.loads += 1
        log.info("app %s: serving version %s", app_id, fresh.version)
        self.evict(keep=app_id)

    # --- memory ---------------------------------------------------------------------------------
    def resident_mb(self) -> float:
        """The estimated memory of the resident apps (MB)."""
        return sum(a.size_mb for a in list(self._apps.values()))

    def evict(self, keep: str | None = None) -> list[str]:
        """Drop least recently used apps until the resident ones fit `max_resident_mb` (never `keep`,
        the app just loaded); returns the evicted ids. Requests in flight keep their reference."""
        if self.max_resident_mb <= 0:
            return []
        evicted = []
        with self._lock:
            total = sum(a.size_mb for a in self._apps.values())
            by_age = sorted((a for a in self._apps if a != keep), key=lambda a: self._status[a].last_used)
            for app_id in by_age:
                if total <= self.max_resident_mb:
                    break
                total -= self._apps.pop(app_id).size_mb
                self._pending.pop(app_id, None)
                self._status[app_id].evictions += 1
                evicted.append(app_id)
        if evicted:
            log.info("evicted %d idle app(s) to stay within %.0f MB: %s", len(evicted), self.max_resident_mb,
                     ", ".join(evicted[:10]))
        return evicted

    # --- readiness and hot reload ---------------------------------------------------------------
    def ready(self) -> bool:
        """The registry can serve: apps load on their first request, so there is nothing to wait for."""
        return True

    def refresh(self, prepare: Callable[[LoadedApp], None] | None = None) -> list[str]:
        """Load the newly published version of every resident app; returns the apps that changed.

        `prepare` (default: the registry's) runs on a freshly loaded version before it is swapped in;
        when it fails the old version keeps serving and the swap is tried again next round."""
        prepare = prepare or self.prepare
        changed = []
        with self._reload:
            for app_id, loaded in list(self._apps.items()):
                status = self._status[app_id]
                status.last_check = time.time()
                try:
                    wanted = bundle.current_version(self.artifacts, app_id)
                except OSError as exc:
                    status.last_error = f"cannot read the current pointer: {exc}"
                    continue
                if wanted is None or loaded.version == wanted:
                    continue
                if status.last_error and status.last_error.startswith(f"refused {wanted}:"):
                    continue  # already refused this version; wait for a new publish
                fresh = self._pending.pop(app_id, None)  # loaded in an earlier round, not yet prepared
                if fresh is None or fresh.version != wanted:
                    fresh = self._load_version(app_id, wanted, status, loaded)
                    if fresh is None:
                        continue
                if prepare is not None:
                    try:
                        prepare(fresh)
                    except Exception as exc:  # noqa: BLE001 - whatever failed, the old bundle is the safer one
                        self._pending[app_id] = fresh
                        status.last_error = f"waiting to swap in {wanted}: {exc}"
                        log.warning("app %s: version %s not swapped in yet: %s", app_id, wanted, exc)
                        continue
                if self._apps.get(app_id) is not loaded:
                    continue  # evicted meanwhile: its next request loads the new version
                self._install(app_id, fresh, status)
                changed.append(app_id)
        self.evict()
        return changed

    def status(self) -> list[dict[str, Any]]:
        """Per known app: the served version, whether it is resident, its size, loads and errors."""
        with self._lock:
            rows = list(self._status.items())
            resident = dict(self._apps)
        return [{"app_id": a, "version": s.version, "loaded_at": s.loaded_at, "last_error": s.last_error,
                 "last_check": s.last_check, "resident": a in resident,
                 "size_mb": round(resident[a].size_mb, 1) if a in resident else None,
                 "loads": s.loads, "evictions": s.evictions} for a, s in rows]
