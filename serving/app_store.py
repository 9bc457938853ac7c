"""The app store: apps and their keys managed through the admin API, in SQLite or PostgreSQL.

An app row holds the sha256 of its key (and of the previous key while a rotation's overlap lasts),
its settings as the JSON form of an `[apps.<id>]` table (checked by `parse_api_app`, the functions
that check minirec.toml), and when it was created, last updated and deleted (a deleted row stays,
so its audit keeps its meaning; the id can be created again). Every change writes an audit entry
(who: the admin key's fingerprint; when; what changed) and bumps one change counter in the same
transaction, which each server polls about once a second (`serving/live_apps.py`).

The schema is created and upgraded by the Alembic migrations in `serving/migrations/`: at server
start and by `minirec db upgrade`. SQLite by default (`<state_dir>/apps.sqlite`, nothing to run);
PostgreSQL when `[server] database_url` says so, for replicas sharing one table.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, Engine

from serving.server_config import AppConfig, ServerConfig, hash_key, new_key, parse_api_app

__all__ = ["AppExists", "AppNotFound", "AppStore", "AppStoreError", "AuditEntry", "StoredApp", "database_url",
           "fingerprint", "open_app_store"]

log = logging.getLogger("minirec.app_store")
# Alembic logs each of its plugins and steps at INFO on every start; the store logs its schema
# revision itself (and a migration that runs), so only Alembic's warnings reach the server log.
logging.getLogger("alembic").setLevel(logging.WARNING)

SQLITE_FILE = "apps.sqlite"
#: The longest overlap a rotation may give the previous key (7 days).
MAX_OVERLAP_S = 7 * 24 * 3600
#: pg_advisory_xact_lock key: one migration at a time over all replicas and workers.
_MIGRATION_LOCK = 0x6D696E69726563

metadata = sa.MetaData()

#: One row per app created through the API (deleted ones keep their row, `deleted_at` set).
apps_table = sa.Table(
    "minirec_apps", metadata,
    sa.Column("app_id", sa.String(64), primary_key=True),
    sa.Column("key_sha256", sa.String(64), nullable=False),
    sa.Column("previous_key_sha256", sa.String(64)),
    sa.Column("previous_key_until", sa.DateTime(timezone=True)),
    sa.Column("settings", sa.JSON, nullable=False),
    sa.Column("revision", sa.Integer, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("deleted_at", sa.DateTime(timezone=True)),
)
#: Who changed what, when; never a key, only fingerprints of key digests.
audit_table = sa.Table(
    "minirec_app_audit", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("app_id", sa.String(64), nullable=False, index=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("actor", sa.String(64), nullable=False),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("changes", sa.JSON, nullable=False),
)
#: One row (id 1): bumped by every change, polled by every server.
changes_table = sa.Table(
    "minirec_app_changes", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("version", sa.BigInteger, nullable=False),
    sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
)


class AppStoreError(Exception):
    """The app store refused a change; the message says why."""


class AppNotFound(AppStoreError):
    """No live app of that id in the store."""


class AppExists(AppStoreError):
    """An app of that id exists already."""


def fingerprint(digest: str | None) -> str | None:
    """What the API shows of a key: the first 12 hex digits of its sha256 (never the key)."""
    return digest[:12] if digest else None


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    # SQLite gives back naive datetimes; everything is written in UTC
    return value.replace(tzinfo=dt.timezone.utc) if value is not None and value.tzinfo is None else value


def _iso(value: dt.datetime | None) -> str | None:
    return _utc(value).isoformat() if value is not None else None


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@dataclass(frozen=True)
class StoredApp:
    """One live app row."""

    app_id: str
    key_sha256: str
    previous_key_sha256: str | None
    previous_key_until: dt.datetime | None
    settings: dict[str, Any]
    revision: int
    created_at: dt.datetime
    updated_at: dt.datetime

    @classmethod
    def from_row(cls, row: Any) -> "StoredApp":
        return cls(row.app_id, row.key_sha256, row.previous_key_sha256, _utc(row.previous_key_until),
                   dict(row.settings or {}), row.revision, _utc(row.created_at), _utc(row.updated_at))

    def config(self) -> AppConfig:
        """The app as the server serves it (checked as minirec.toml's apps are)."""
        until = self.previous_key_until.timestamp() if self.previous_key_until else None
        return parse_api_app(self.app_id, self.settings, self.key_sha256,
                             previous_key_sha256=self.previous_key_sha256 if until else None,
                             previous_key_until=until, file="app store", name=f"apps.{self.app_id}")

    def public(self) -> dict[str, Any]:
        """What GET shows: everything but key digests, which are shown as fingerprints."""
        previous_valid = self.previous_key_until is not None and self.previous_key_until > _now()
        return {"app_id": self.app_id, "source": "api", "settings": self.settings,
                "key_fingerprint": fingerprint(self.key_sha256),
                "previous_key_fingerprint": fingerprint(self.previous_key_sha256) if previous_valid else None,
                "previous_key_valid_until": _iso(self.previous_key_until) if previous_valid else None,
                "created_at": _iso(self.created_at), "updated_at": _iso(self.updated_at)}


@dataclass(frozen=True)
class AuditEntry:
    """One change: who (admin key fingerprint), when, what."""

    app_id: str
    at: dt.datetime
    actor: str
    action: str
    changes: dict[str, Any]

    def public(self) -> dict[str, Any]:
        return {"app_id": self.app_id, "at": _iso(self.at), "actor": self.actor, "action": self.action,
                "changes": self.changes}


def database_url(config: ServerConfig) -> str:
    """The store's SQLAlchemy URL: `[server] database_url`, else SQLite in the state folder.
    `postgresql://` and `postgres://` mean the psycopg (3) driver."""
    url = config.database_url or f"sqlite:///{config.state_dir / SQLITE_FILE}"
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def open_app_store(config: ServerConfig) -> AppStore:
    """The store of a starting server, migrated to the newest schema; AppStoreError (naming the
    database, never its password) when it cannot be reached or migrated."""
    store = AppStore.for_config(config)
    try:
        revision = store.upgrade()
    except sa.exc.SQLAlchemyError as exc:
        store.close()
        raise AppStoreError(f"the app store at {store.description} cannot be opened or migrated: {exc}") from exc
    log.info("app store: %s at schema %s", store.description, revision)
    return store


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # WAL: the workers of a host read while one writes; busy_timeout: a writer waits for another.
    # No implicit transactions of the driver: `_sqlite_begin` says how each one starts.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def _sqlite_begin(connection: Connection) -> None:
    # a change takes the write lock before it reads (what SELECT … FOR UPDATE does in PostgreSQL),
    # so two admins patching one app never lose an update; reads never take it
    write = connection.get_execution_options().get("minirec_write", False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


class AppStore:
    """The apps table and its audit, at one SQLAlchemy URL (see the module docstring)."""

    def __init__(self, url: str) -> None:
        self.url = sa.make_url(url)
        if self.url.get_backend_name() == "sqlite":
            if self.url.database in (None, "", ":memory:"):
                raise AppStoreError("the app store needs a SQLite file (sqlite:///path), not an in-memory database")
            Path(self.url.database).parent.mkdir(parents=True, exist_ok=True)
            self.engine: Engine = sa.create_engine(self.url)
            sa.event.listen(self.engine, "connect", _sqlite_connect)
            sa.event.listen(self.engine, "begin", _sqlite_begin)
        else:
            self.engine = sa.create_engine(self.url, pool_pre_ping=True, pool_size=2, max_overflow=4)

    @classmethod
    def for_config(cls, config: ServerConfig) -> "AppStore":
        """The store a server with `config` uses."""
        return cls(database_url(config))

    def close(self) -> None:
        self.engine.dispose()

    @property
    def description(self) -> str:
        """The URL without its password, for logs."""
        return self.url.render_as_string(hide_password=True)

    # --- schema ---------------------------------------------------------------------------------

    def _alembic(self, connection: Connection) -> Config:
        cfg = Config()
        cfg.set_main_option("script_location", "serving:migrations")
        cfg.attributes["connection"] = connection
        return cfg

    @contextlib.contextmanager
    def _migration_lock(self, connection: Connection) -> Iterator[None]:
        """One migration at a time: workers and replicas all start by upgrading."""
        if self.url.get_backend_name() == "postgresql":
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
            yield
            return
        with open(f"{self.url.database}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def upgrade(self) -> str:
        """Apply the migrations not applied yet; returns the schema's revision."""
        with self.engine.connect() as connection:
            with self._migration_lock(connection):
                command.upgrade(self._alembic(connection), "head")
                connection.commit()
            return self.revision(connection) or ""

    def revision(self, connection: Connection | None = None) -> str | None:
        """The schema revision the database is at (None before the first migration)."""
        if connection is None:
            with self.engine.connect() as conn:
                return self.revision(conn)
        return MigrationContext.configure(connection).get_current_revision()

    @staticmethod
    def head() -> str:
        """The newest revision the code ships."""
        cfg = Config()
        cfg.set_main_option("script_location", "serving:migrations")
        return ScriptDirectory.from_config(cfg).get_current_head() or ""

    # --- reads ----------------------------------------------------------------------------------

    def version(self) -> int:
        """The change counter: moves with every change (one row, one cheap query)."""
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(changes_table.c.version).where(changes_table.c.id == 1)).scalar_one())

    def apps(self) -> list[StoredApp]:
        """Every live app, by id."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(apps_table).where(apps_table.c.deleted_at.is_(None))
                                .order_by(apps_table.c.app_id))
            return [StoredApp.from_row(r) for r in rows]

    def get(self, app_id: str) -> StoredApp:
        """The live app `app_id`; AppNotFound otherwise."""
        with self.engine.connect() as conn:
            return self._live(conn, app_id)

    def audit(self, app_id: str, limit: int = 100) -> list[AuditEntry]:
        """The newest `limit` changes of `app_id`, oldest first (also of a deleted app)."""
        query = (sa.select(audit_table).where(audit_table.c.app_id == app_id)
                 .order_by(audit_table.c.id.desc()).limit(limit))
        with self.engine.connect() as conn:
            rows = list(conn.execute(query))
        return [AuditEntry(r.app_id, _utc(r.at), r.actor, r.action, dict(r.changes)) for r in reversed(rows)]

    # --- changes --------------------------------------------------------------------------------

    def create(self, app_id: str, settings: Mapping[str, Any], actor: str) -> tuple[StoredApp, str]:
        """A new app and its key: (the app, the key — returned once, only its sha256 is stored).
        Raises ServerConfigError for bad settings, AppExists when the id is taken."""
        key = new_key()
        digest = hash_key(key)
        settings = dict(settings)
        parse_api_app(app_id, settings, digest)  # refuse bad settings before anything is written
        now = _now()
        values = {"key_sha256": digest, "previous_key_sha256": None, "previous_key_until": None,
                  "settings": settings, "created_at": now, "updated_at": now, "deleted_at": None}
        try:
            with self._writing() as conn:
                row = conn.execute(sa.select(apps_table.c.deleted_at, apps_table.c.revision)
                                   .where(apps_table.c.app_id == app_id).with_for_update()).first()
                if row is not None and row.deleted_at is None:
                    raise AppExists(f"app {app_id!r} exists already")
                if row is None:
                    conn.execute(sa.insert(apps_table).values(app_id=app_id, revision=1, **values))
                else:  # created again after a delete: a new app under the old id
                    conn.execute(sa.update(apps_table).where(apps_table.c.app_id == app_id)
                                 .values(revision=row.revision + 1, **values))
                self._audit(conn, app_id, now, actor, "create",
                            {"settings": settings, "key_fingerprint": fingerprint(digest)})
                self._bump(conn, now)
        except sa.exc.IntegrityError as exc:  # another request created it in between
            raise AppExists(f"app {app_id!r} exists already") from exc
        return self.get(app_id), key

    def update(self, app_id: str, patch: Mapping[str, Any], actor: str, rotate_key: bool = False,
               overlap_seconds: int = 0) -> tuple[StoredApp, str | None]:
        """Change settings and/or rotate the key: (the app, the new key or None).

        `patch` replaces the top-level tables it names (`{"scenes": {...}}` replaces every scene
        rule; a value of None removes the table: back to the defaults). With `rotate_key`, a new key
        is made and the current one stays valid for `overlap_seconds` more (0: it stops at once);
        a rotation during an overlap ends the older key's overlap. Raises ServerConfigError for bad
        settings, AppNotFound, AppStoreError for a bad overlap."""
        if not 0 <= overlap_seconds <= MAX_OVERLAP_S:
            raise AppStoreError(f"overlap_seconds: expected 0 to {MAX_OVERLAP_S} (7 days), got {overlap_seconds}")
        now = _now()
        key = new_key() if rotate_key else None
        with self._writing() as conn:
            app = self._live(conn, app_id, lock=True)
            settings = {k: v for k, v in {**app.settings, **patch}.items() if v is not None}
            digest = hash_key(key) if key else app.key_sha256
            parse_api_app(app_id, settings, digest)
            values: dict[str, Any] = {}
            changed = {name: {"from": app.settings.get(name), "to": settings.get(name)}
                       for name in sorted(set(app.settings) | set(settings))
                       if app.settings.get(name) != settings.get(name)}
            if changed:
                values["settings"] = settings
                self._audit(conn, app_id, now, actor, "update", changed)
            if key:
                until = now + dt.timedelta(seconds=overlap_seconds) if overlap_seconds else None
                values.update(key_sha256=digest, previous_key_sha256=app.key_sha256 if until else None,
                              previous_key_until=until)
                self._audit(conn, app_id, now, actor, "rotate_key",
                            {"key_fingerprint": {"from": fingerprint(app.key_sha256), "to": fingerprint(digest)},
                             "overlap_seconds": overlap_seconds, "previous_key_valid_until": _iso(until)})
            if values:
                conn.execute(sa.update(apps_table).where(apps_table.c.app_id == app_id)
                             .values(revision=app.revision + 1, updated_at=now, **values))
                self._bump(conn, now)
        return self.get(app_id), key

    def delete(self, app_id: str, actor: str) -> None:
        """Delete the app: its key stops working on every server at their next poll."""
        now = _now()
        with self._writing() as conn:
            app = self._live(conn, app_id, lock=True)
            conn.execute(sa.update(apps_table).where(apps_table.c.app_id == app_id)
                         .values(deleted_at=now, updated_at=now, revision=app.revision + 1))
            self._audit(conn, app_id, now, actor, "delete", {"key_fingerprint": fingerprint(app.key_sha256)})
            self._bump(conn, now)

    # --- helpers --------------------------------------------------------------------------------

    def _writing(self) -> contextlib.AbstractContextManager[Connection]:
        """A transaction that changes the store (committed at the end, rolled back on error)."""
        return self.engine.execution_options(minirec_write=True).begin()

    @staticmethod
    def _live(conn: Connection, app_id: str, lock: bool = False) -> StoredApp:
        query = sa.select(apps_table).where(apps_table.c.app_id == app_id, apps_table.c.deleted_at.is_(None))
        row = conn.execute(query.with_for_update() if lock else query).first()
        if row is None:
            raise AppNotFound(f"no app {app_id!r} created through the API")
        return StoredApp.from_row(row)

    @staticmethod
    def _audit(conn: Connection, app_id: str, at: dt.datetime, actor: str, action: str,
               changes: dict[str, Any]) -> None:
        conn.execute(sa.insert(audit_table).values(app_id=app_id, at=at, actor=actor, action=action,
                                                   changes=changes))

    @staticmethod
    def _bump(conn: Connection, at: dt.datetime) -> None:
        conn.execute(sa.update(changes_table).where(changes_table.c.id == 1)
                     .values(version=changes_table.c.version + 1, changed_at=at))
