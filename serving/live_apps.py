"""The apps a server serves: minirec.toml's, plus those of the app store, followed as they change.

Each server polls the store's change counter about once a second (`POLL_S`, one single-row
query); when it moved, the live rows are read and a new `ServerConfig` is built with every app,
which the context swaps in by replacing one reference (serving/context.py). Rows are parsed again
only when their revision changed, so a change costs one parse, not one per app.

minirec.toml's apps win over the store's: an id in both keeps the file's app (the API refuses to
create such an id; this covers an operator adding it to the file later) and is logged once.
"""

from __future__ import annotations

import logging

from serving.app_store import AppStore, StoredApp
from serving.server_config import AppConfig, ServerConfig, ServerConfigError

__all__ = ["LiveApps", "POLL_S"]

log = logging.getLogger("minirec.apps")

#: How often each server polls the store's change counter (seconds).
POLL_S = 1.0


class LiveApps:
    """minirec.toml's apps (`file_config`) merged with the live apps of `store`."""

    def __init__(self, file_config: ServerConfig, store: AppStore) -> None:
        self.file_config = file_config
        self.store = store
        #: The change counter the current table was read at (None before the first read).
        self.version: int | None = None
        self._parsed: dict[str, tuple[int, AppConfig]] = {}
        self._warned: set[str] = set()

    def is_file_app(self, app_id: str) -> bool:
        """Whether `app_id` comes from minirec.toml (read-only through the API)."""
        return app_id in self.file_config.apps

    def poll(self) -> ServerConfig | None:
        """A new config when the store changed since the last poll, else None (one cheap query)."""
        version = self.store.version()  # read first: a change racing this read is seen next time
        if version == self.version:
            return None
        config = self.file_config.with_apps(self._merge(self.store.apps()))
        self.version = version
        return config

    def _merge(self, rows: list[StoredApp]) -> dict[str, AppConfig]:
        apps = dict(self.file_config.apps)
        taken = {a.key_sha256 for a in apps.values()}
        parsed: dict[str, tuple[int, AppConfig]] = {}
        for row in rows:
            if row.app_id in apps:
                if row.app_id not in self._warned:
                    self._warned.add(row.app_id)
                    log.warning("app %s is in minirec.toml and in the app store: serving the file's", row.app_id)
                continue
            app = self._parse(row)
            if app is None or app.key_sha256 in taken:
                continue
            apps[row.app_id] = app
            parsed[row.app_id] = (row.revision, app)
        self._parsed = parsed
        return apps

    def _parse(self, row: StoredApp) -> AppConfig | None:
        cached = self._parsed.get(row.app_id)
        if cached is not None and cached[0] == row.revision:
            return cached[1]
        try:
            return row.config()
        except ServerConfigError as exc:
            # written through the API, so it was valid then; a stricter check since: keep the
            # last good settings if there are any, and say so
            log.error("app %s in the app store is not valid any more: %s", row.app_id, exc)
            return cached[1] if cached is not None else None
