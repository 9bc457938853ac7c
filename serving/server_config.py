"""The server's configuration, read and checked in one place: `minirec.toml` and each app's `search.toml`.

minirec.toml holds every table the server reads:

    [server]                  artifacts, state_dir, redis_url, admin/platform key digests, limits
    [server.overload]         when a worker degrades and sheds (serving/overload.py)
    [apps.<id>]               api_key_sha256, seed_data, rate_limit_per_second
    [apps.<id>.scenes.<scene>]       scene rules over the defaults of recsys/rules.py
    [apps.<id>.experiments.<name>]   A/B experiments (vocab/experiments.py)
    [apps.<id>.features]      real-time feature TTLs, list sizes and popularity weights (features/store.py)
    [apps.<id>.search]        search settings (as search.toml; when given, they replace the file's)
    [apps.<id>.risk]          risk-control thresholds (features/risk.py, docs/risk.md)
    [privacy]                 k-anonymity of the insight aggregates (analytics/insight.py)

Apps created through the admin API (serving/app_store.py) keep the same tables, minus the key and
the seed data, and are checked by the same functions (`parse_api_app`).

`ARTIFACTS/<app>/search.toml` (re-read when it changes) holds the app's search settings. Every
table refuses unknown keys and values of the wrong type with the file and the dotted key in the
message (serving/config_table.py), so a typo never falls back to a default silently. The
environment (`MINIREC_CONFIG`, `REDIS_URL`) is read here too (`server_config_from_env`).

Keys are random tokens of at least 16 characters, so a plain sha256 is enough to store them (no
salt or slow hash needed: there is nothing to brute-force in a high-entropy token). A key is found
by one dict lookup of its digest, and hashed once per request however many apps there are.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import logging
import math
import os
import re
import secrets
import time
import tomllib
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from features.risk import RiskSettings
from features.store import DEFAULT_WEIGHTS, EVENT_TYPES
from recsys.bundle import check_app_name
from recsys.rules import DEFAULTS, SCENES, SceneRules
from search.settings import SearchSettings
from serving.config_table import ServerConfigError, Table
from vocab.experiments import HOLDOUT, SCENES as EXPERIMENT_SCENES, STRATEGIES, Experiment, Variant

__all__ = ["API_APP_KEYS", "AppConfig", "AppSearchSettings", "FeatureSettings", "OverloadSettings",
           "PrivacySettings", "SearchSettingsFile", "ServerConfig", "ServerConfigError", "hash_key", "key_matches",
           "load_server_config", "new_key", "parse_api_app", "parse_experiments", "parse_scenes",
           "parse_search_settings", "server_config_from_env", "write_server_config"]

log = logging.getLogger("minirec.config")

MIN_KEY_LENGTH = 16
#: Requests per second per API key unless minirec.toml says otherwise: the peak one provider saw
#: for a whole deployment, so it only stops a runaway client.
DEFAULT_RATE_LIMIT = 5000
SEARCH_FILE = "search.toml"
#: How often search.toml's modification time is checked (seconds).
SEARCH_CHECK_EVERY_S = 1.0
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_STREAM_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


# --- keys -----------------------------------------------------------------------------------------

def hash_key(key: str) -> str:
    """The stored form of an API key."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    """A fresh random API key."""
    return "mr_" + secrets.token_urlsafe(24)


def key_matches(key: str | None, digest: str) -> bool:
    """Whether `key` is the key stored as `digest`; keys shorter than MIN_KEY_LENGTH never are.
    Shares the request's one hash with `ServerConfig.app_for_key` (an app key that is not an admin
    or platform key is still hashed once)."""
    return key is not None and len(key) >= MIN_KEY_LENGTH and hmac.compare_digest(_request_digest(key), digest)


#: The last (key, digest) hashed in this context. A request runs in a context of its own (its task),
#: so the guard, the overload path and the route's dependency, which each look the key up, share one
#: hash; a context never sees another request's key.
_REQUEST_DIGEST: ContextVar[tuple[bytes, str] | None] = ContextVar("minirec_request_digest", default=None)


def _request_digest(key: str) -> str:
    """`hash_key(key)`, hashed at most once per request (see `_REQUEST_DIGEST`)."""
    raw = key.encode()
    last = _REQUEST_DIGEST.get()
    if last is not None and hmac.compare_digest(last[0], raw):
        return last[1]
    digest = hash_key(key)
    _REQUEST_DIGEST.set((raw, digest))
    return digest


# --- what the tables become -----------------------------------------------------------------------

@dataclass(frozen=True)
class OverloadSettings:
    """`[server.overload]` of minirec.toml; per worker."""

    #: The cheap paths answer once the expected wait of a new request — requests in flight times
    #: the worker's recent CPU cost per request — reaches this (the queue a full answer would join).
    degrade_wait_ms: float = 20.0
    #: … and at least this many reads (GET requests) are in flight (0 = never degrade).
    degrade_in_flight: int = 4
    #: Requests in flight in one worker from which new requests get 503 (0 = never shed).
    shed_in_flight: int = 256
    #: Seconds a shed client is asked to wait (Retry-After).
    retry_after_s: int = 1


@dataclass(frozen=True)
class PrivacySettings:
    """`[privacy]` of minirec.toml: server-wide, because k-anonymity is the platform's promise to its
    users, not a merchant's setting — no app (nor the admin API's app settings) can lower it."""

    #: Every count an aggregate shows covers at least this many users, or it is suppressed.
    k_min: int = 50
    #: Counts shown are rounded to the nearest multiple of this (1 = exact).
    round_to: int = 10


@dataclass(frozen=True)
class FeatureSettings:
    """`[apps.<id>.features]`: the real-time feature store's durations, sizes and popularity weights.

    None means the store's own default (features/store.py documents each)."""

    purchased_ttl_days: float | None = None
    shown_ttl_hours: float | None = None
    history_ttl_days: float | None = None
    half_life_hours: float | None = None
    dedupe_ttl_hours: float | None = None
    queries_max: int | None = None
    clicked_max: int | None = None
    popularity_max: int | None = None
    #: Popularity weight per event type; types left out keep their default weight.
    weights: dict[str, float] | None = None

    def store_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of `FeatureStore` for the settings that were given."""
        given = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}
        if "weights" in given:
            given["weights"] = {**DEFAULT_WEIGHTS, **given["weights"]}
        return given


@dataclass(frozen=True)
class AppConfig:
    """One app (tenant): from an `[apps.<id>]` table of minirec.toml, or created through the admin API."""

    app_id: str
    key_sha256: str
    scenes: dict[str, SceneRules]
    #: Optional data folder whose profiles are loaded into Redis at start (first deployment, demo).
    seed_data: Path | None = None
    #: Requests per second this app's key may make, over all workers and replicas (0 = no limit).
    rate_limit_per_second: int = DEFAULT_RATE_LIMIT
    #: A/B experiments by scene (vocab/experiments.py; at most one per scene).
    experiments: dict[str, Experiment] = field(default_factory=dict)
    #: Real-time feature store settings.
    features: FeatureSettings = field(default_factory=FeatureSettings)
    #: Search settings of the app table; None: the app's search.toml (or the defaults).
    search: SearchSettings | None = None
    #: Risk-control thresholds (`[apps.<id>.risk]`; docs/risk.md).
    risk: RiskSettings = field(default_factory=RiskSettings)
    #: The key replaced by the last rotation, valid until `previous_key_until` (epoch seconds).
    previous_key_sha256: str | None = None
    previous_key_until: float | None = None
    #: Created through the admin API (serving/app_store.py); False: read from minirec.toml.
    managed: bool = False


@dataclass(frozen=True)
class ServerConfig:
    artifacts: Path
    state_dir: Path
    redis_url: str | None
    reload_interval_s: float
    admin_key_sha256: str
    platform_key_sha256: str | None
    apps: dict[str, AppConfig] = field(default_factory=dict)
    #: Report ready while Redis is down (serving degraded on purpose) instead of not ready.
    ready_when_degraded: bool = False
    #: Larger request bodies are refused with 413 before they are read.
    max_body_bytes: int = 2 * 1024 * 1024
    #: A request waits at most this long for its Redis read, then answers degraded.
    redis_budget_ms: float = 50.0
    #: Requests per second of the platform's key (platform profile upserts; 0 = no limit).
    platform_rate_limit_per_second: int = DEFAULT_RATE_LIMIT
    #: When to degrade and when to shed (serving/overload.py).
    overload: OverloadSettings = field(default_factory=OverloadSettings)
    #: NATS JetStream server for events (features/eventstream.py); None: the local log in state_dir.
    event_stream: str | None = None
    event_stream_name: str = "MINIREC_EVENTS"
    #: The app store's database (SQLAlchemy URL); None: SQLite in `state_dir` (serving/app_store.py).
    database_url: str | None = None
    #: Memory budget of one worker's resident apps (MB, estimated per app; serving/registry.py): the
    #: least recently used apps are evicted beyond it and loaded again on their next request. 0: none.
    max_resident_mb: float = 0.0
    #: Apps (the first of minirec.toml's, in file order) loaded before a worker says it is ready, so a
    #: server of a few merchants answers its first requests warm; every other app loads on its first
    #: request. 0: none.
    preload_apps: int = 4
    #: k-anonymity of the insight aggregates (GET insight; docs/insight.md).
    privacy: PrivacySettings = field(default_factory=PrivacySettings)
    #: Key digest -> (app id, valid until or None): built from `apps`, one lookup per request.
    _owners: dict[str, tuple[str, float | None]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        owners: dict[str, tuple[str, float | None]] = {}
        for app in self.apps.values():
            if app.previous_key_sha256 and app.previous_key_until is not None:
                owners[app.previous_key_sha256] = (app.app_id, app.previous_key_until)
        for app in self.apps.values():  # a current key wins over anyone's previous one
            owners[app.key_sha256] = (app.app_id, None)
        object.__setattr__(self, "_owners", owners)

    def app_for_key(self, key: str | None) -> str | None:
        """The app id whose key this is (its current key, or its previous one within the rotation's
        overlap), if any: one hash and one dict lookup, whatever the number of apps. The lookup is
        by digest, so its timing says nothing about any stored key that an attacker could use."""
        if key is None or len(key) < MIN_KEY_LENGTH:
            return None
        owner = self._owners.get(_request_digest(key))
        if owner is None or (owner[1] is not None and time.time() >= owner[1]):
            return None
        return owner[0]

    def with_apps(self, apps: Mapping[str, AppConfig]) -> "ServerConfig":
        """This config serving `apps` instead (the server swaps it in when the app table changes)."""
        return dataclasses.replace(self, apps=dict(apps))


# --- minirec.toml ---------------------------------------------------------------------------------

_SERVER_KEYS = ("artifacts", "state_dir", "redis_url", "reload_interval_seconds", "admin_key_sha256",
                "platform_key_sha256", "ready_when_degraded", "max_body_bytes", "redis_budget_ms",
                "platform_rate_limit_per_second", "overload", "event_stream", "event_stream_name", "database_url",
                "max_resident_mb", "preload_apps")
#: The tables an app created through the admin API may set: those of `[apps.<id>]` but its key
#: (the API makes and rotates it) and seed data (a path on the server).
API_APP_KEYS = ("rate_limit_per_second", "scenes", "experiments", "features", "search", "risk")
_APP_KEYS = ("api_key_sha256", "seed_data", *API_APP_KEYS)
_DATABASE_SCHEMES = ("sqlite", "postgresql", "postgres")


def _sha(table: Table, key: str, required: bool = True) -> str | None:
    if key not in table:
        if required:
            raise table.error("missing (sha256 of the key; `minirec keys new` makes one)", key)
        return None
    return table.text(key, None, lambda v: bool(_SHA256.match(v)), "a lowercase hex sha256 (64 characters)")


def load_server_config(path: str | Path, redis_url: str | None = None) -> ServerConfig:
    """Read and check minirec.toml; relative paths in it are relative to the file. `redis_url`
    overrides the file's. Raises ServerConfigError naming the file and the key."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ServerConfigError(f"{path}: not found (create one with `minirec serve --init`)") from exc
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ServerConfigError(f"{path}: {exc}") from exc
    base = path.resolve().parent
    top = Table(raw, str(path), "", ("server", "apps", "privacy"))
    server = top.table("server", _SERVER_KEYS)
    apps_table = top.table("apps", None)
    if not apps_table.raw:
        raise ServerConfigError(f"{path}: no [apps.<id>] table")
    apps = {app_id: _app(app_id, table, base) for app_id, table in apps_table.tables(_APP_KEYS)}
    digests = [a.key_sha256 for a in apps.values()]
    if len(set(digests)) != len(digests):
        raise ServerConfigError(f"{path}: two apps share one API key")
    return ServerConfig(
        artifacts=base / server.text("artifacts", "artifacts"),
        state_dir=base / server.text("state_dir", ".minirec-state"),
        redis_url=redis_url if redis_url is not None else server.text("redis_url", None),
        reload_interval_s=server.number("reload_interval_seconds", 2.0, 0.0, above=True),
        admin_key_sha256=_sha(server, "admin_key_sha256") or "",
        platform_key_sha256=_sha(server, "platform_key_sha256", required=False),
        apps=apps,
        ready_when_degraded=server.boolean("ready_when_degraded", False),
        max_body_bytes=server.integer("max_body_bytes", 2 * 1024 * 1024, low=1),
        redis_budget_ms=float(server.integer("redis_budget_ms", 50, low=1)),
        platform_rate_limit_per_second=server.integer(
            "platform_rate_limit_per_second", DEFAULT_RATE_LIMIT, what="a whole number >= 0 (0 = no limit)"),
        overload=_overload(server.table("overload", ("degrade_wait_ms", "degrade_in_flight", "shed_in_flight",
                                                     "retry_after_seconds"))),
        event_stream=server.text("event_stream", None, lambda v: v == "" or v.startswith(("nats://", "tls://")),
                                 "a nats://host:port URL") or None,
        event_stream_name=server.text("event_stream_name", "MINIREC_EVENTS", lambda v: bool(_STREAM_NAME.match(v)),
                                      "a name of letters, digits, _ and -") or "MINIREC_EVENTS",
        database_url=server.text("database_url", None,
                                 lambda v: v.split(":", 1)[0].split("+", 1)[0] in _DATABASE_SCHEMES,
                                 "a sqlite:/// or postgresql:// URL") or None,
        max_resident_mb=server.number("max_resident_mb", 0.0, 0.0, what="a number of MB >= 0 (0 = no budget)"),
        preload_apps=server.integer("preload_apps", 4, low=0),
        privacy=_privacy(top.table("privacy", ("k_min", "round_to"))),
    )


def server_config_from_env(path: str | Path | None = None) -> ServerConfig:
    """The config the server starts with: minirec.toml at `path`, else at `MINIREC_CONFIG` (default
    ./minirec.toml), with `REDIS_URL` (when set) overriding the file's Redis."""
    return load_server_config(path or os.environ.get("MINIREC_CONFIG", "minirec.toml"),
                              redis_url=os.environ.get("REDIS_URL") or None)


def _app(app_id: str, table: Table, base: Path) -> AppConfig:
    seed = table.text("seed_data", None)
    return _app_settings(app_id, table, _sha(table, "api_key_sha256") or "", seed_data=(base / seed) if seed else None)


def _app_settings(app_id: str, table: Table, key_sha256: str, **extra: Any) -> AppConfig:
    """The app of an `[apps.<id>]` table (or of an API app's settings), every key checked."""
    try:
        check_app_name(app_id)
    except ValueError as exc:
        raise ServerConfigError(f"{table.file}: [{table.name}] {exc}") from exc
    search = table.table("search", None)
    return AppConfig(
        app_id=app_id,
        key_sha256=key_sha256,
        scenes=parse_scenes(table.table("scenes", None)),
        rate_limit_per_second=table.integer("rate_limit_per_second", DEFAULT_RATE_LIMIT,
                                            what="a whole number >= 0 (0 = no limit)"),
        experiments=parse_experiments(table.table("experiments", None)),
        features=_features(table.table("features", [f.name for f in dataclasses.fields(FeatureSettings)])),
        search=parse_search_settings(search.raw, search.file, search.name) if "search" in table else None,
        risk=parse_risk(table.table("risk", [f.name for f in dataclasses.fields(RiskSettings)])),
        **extra,
    )


def parse_api_app(app_id: str, settings: Any, key_sha256: str, *, previous_key_sha256: str | None = None,
                  previous_key_until: float | None = None, file: str = "request body",
                  name: str = "settings") -> AppConfig:
    """An app created through the admin API: `settings` are the tables of `[apps.<id>]` in their
    JSON form (`API_APP_KEYS`), checked by the same functions as minirec.toml. Errors name `file`
    and the dotted key under `name`, e.g. `request body: [settings.scenes.home] max_per_category: …`."""
    return _app_settings(app_id, Table(settings, file, name, API_APP_KEYS), key_sha256,
                         previous_key_sha256=previous_key_sha256, previous_key_until=previous_key_until,
                         managed=True)


def _privacy(table: Table) -> PrivacySettings:
    """`[privacy]`: k_min >= 2 (a group of one is a person), round_to >= 1 and at most k_min."""
    k_min = table.integer("k_min", PrivacySettings.k_min, low=2)
    round_to = table.integer("round_to", PrivacySettings.round_to, low=1)
    if round_to > k_min:
        raise table.expected("round_to", f"a whole number from 1 to k_min ({k_min})", round_to)
    return PrivacySettings(k_min=k_min, round_to=round_to)


def _overload(table: Table) -> OverloadSettings:
    defaults = OverloadSettings()
    return OverloadSettings(
        degrade_wait_ms=table.number("degrade_wait_ms", defaults.degrade_wait_ms, 0.0, 1e6,
                                     what="a number of milliseconds >= 0"),
        degrade_in_flight=table.integer("degrade_in_flight", defaults.degrade_in_flight),
        shed_in_flight=table.integer("shed_in_flight", defaults.shed_in_flight),
        retry_after_s=table.integer("retry_after_seconds", defaults.retry_after_s, low=1))


def parse_risk(table: Table) -> RiskSettings:
    """`[apps.<id>.risk]` over the defaults of features/risk.py: thresholds are whole numbers >= 0
    (0 turns that signal off), durations numbers > 0; unknown keys are refused."""
    values: dict[str, Any] = {}
    for f in dataclasses.fields(RiskSettings):
        if f.name not in table:
            continue
        if f.type in (bool, "bool"):
            values[f.name] = table.boolean(f.name, f.default)
        elif f.type in (int, "int"):
            values[f.name] = table.integer(f.name, f.default, what="a whole number >= 0 (0 = off)")
        else:
            values[f.name] = table.number(f.name, f.default, 0.0, above=True)
    return RiskSettings(**values)


def _features(table: Table) -> FeatureSettings:
    values: dict[str, Any] = {}
    for key in ("purchased_ttl_days", "shown_ttl_hours", "history_ttl_days", "half_life_hours", "dedupe_ttl_hours"):
        if key in table:
            values[key] = table.number(key, 0.0, 0.0, above=True)
    for key in ("queries_max", "clicked_max", "popularity_max"):
        if key in table:
            values[key] = table.integer(key, 0, low=1)
    if "weights" in table:
        weights = table.table("weights", EVENT_TYPES)
        values["weights"] = {event: weights.number(event, 0.0) for event in weights.raw}
    return FeatureSettings(**values)


def parse_scenes(table: Table) -> dict[str, SceneRules]:
    """`[apps.<id>.scenes.<scene>]` tables over the defaults of recsys/rules.py; unknown scenes or
    rules and values of the wrong type are errors (checked at start, not per request)."""
    scenes = dict(DEFAULTS)
    known = [f.name for f in dataclasses.fields(SceneRules)]
    unknown = [name for name in table.raw if name not in SCENES]
    if unknown:
        raise table.error(f"unknown scene '{unknown[0]}'; known: {', '.join(SCENES)}")
    for name, rules in table.tables(known):
        default = DEFAULTS[name]
        scenes[name] = dataclasses.replace(default, **{key: _rule(rules, key, getattr(default, key))
                                                       for key in rules.raw})
    return scenes


def _rule(table: Table, key: str, default: Any) -> Any:
    value = table.raw[key]
    if key == "pinned":
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise table.expected(key, "a list of item ids", value)
        return tuple(value)
    if key == "boosted":
        if not isinstance(value, dict) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                  and math.isfinite(v) for v in value.values()):
            raise table.expected(key, "a table of item id = number (standard deviations)", value)
        return {str(item): float(boost) for item, boost in value.items()}
    if isinstance(default, bool) or key == "exclude_purchased":  # exclude_purchased defaults to None
        return table.boolean(key, False)
    if isinstance(default, int):
        return table.integer(key, default)
    return table.number(key, default)


def parse_experiments(table: Table) -> dict[str, Experiment]:
    """`[apps.<id>.experiments.<name>]` tables: experiments by scene, at most one per scene."""
    by_scene: dict[str, Experiment] = {}
    for name, exp in table.tables(("scene", "holdout", "control", "variants")):
        if not _NAME.match(name):
            raise exp.error("experiment name must be 1-32 of A-Z a-z 0-9 _ -")
        scene = exp.choice("scene", None, EXPERIMENT_SCENES)
        if scene in by_scene:
            raise exp.error(f"scene '{scene}' already has experiment '{by_scene[scene].name}' (one experiment per scene)")
        holdout = exp.number("holdout", 0.0, 0.0, 0.99)
        variants_table = exp.table("variants", None)
        if len(variants_table.raw) < 2:
            raise exp.error("expected at least two variants", "variants")
        variants = tuple(_variant(v, t, scene) for v, t in variants_table.tables(("share", *_VARIANT_KEYS)))
        total = holdout + sum(v.share for v in variants)
        if abs(total - 1.0) > 1e-6:
            raise exp.error(f"holdout + variant shares add up to {total:g}, not 1")
        control = exp.choice("control", variants[0].name, [v.name for v in variants])
        by_scene[scene] = Experiment(name, scene, variants, control, holdout)
    return by_scene


_SHELVES = ("home", "exclusive", "related", "search")
#: Variant keys beyond `share`, and the scenes where each has an effect.
_VARIANT_KEYS: dict[str, tuple[str, ...]] = {
    "strategy": EXPERIMENT_SCENES, "max_per_category": _SHELVES, "max_per_brand": _SHELVES,
    "personal_weight": ("search",)}


def _variant(name: str, table: Table, scene: str) -> Variant:
    if not _NAME.match(name) or name == HOLDOUT:
        raise table.error(f"variant name must be 1-32 of A-Z a-z 0-9 _ - (and not '{HOLDOUT}')")
    for key in table.raw:
        if key in _VARIANT_KEYS and scene not in _VARIANT_KEYS[key]:
            raise table.error(f"has no effect on scene '{scene}' (it applies to {', '.join(_VARIANT_KEYS[key])})", key)
    if "share" not in table:
        raise table.error("missing", "share")
    share = table.number("share", 0.0, 0.0, 1.0, above=True)
    strategy = table.choice("strategy", "personalized", STRATEGIES)
    rules = tuple((key, table.integer(key, 0)) for key in ("max_per_category", "max_per_brand") if key in table)
    weight = table.number("personal_weight", 0.0) if "personal_weight" in table else None
    return Variant(name, share, strategy, rules, weight)


def write_server_config(path: Path, apps: dict[str, str], admin_key: str, platform_key: str | None,
                        artifacts: str = "artifacts", seed_data: dict[str, str] | None = None) -> None:
    """Write a minimal minirec.toml for the given app → key pairs (keys are stored hashed); keys
    shorter than MIN_KEY_LENGTH are refused (they would never match)."""
    for name, key in [*apps.items(), ("admin", admin_key), ("platform", platform_key or "x" * MIN_KEY_LENGTH)]:
        if len(key) < MIN_KEY_LENGTH:
            raise ServerConfigError(f"the {name} key is shorter than {MIN_KEY_LENGTH} characters")
    lines = ["[server]", f'artifacts = "{artifacts}"', 'state_dir = ".minirec-state"',
             "reload_interval_seconds = 2.0", f'admin_key_sha256 = "{hash_key(admin_key)}"']
    if platform_key:
        lines.append(f'platform_key_sha256 = "{hash_key(platform_key)}"')
    for app_id, key in apps.items():
        lines += ["", f"[apps.{app_id}]", f'api_key_sha256 = "{hash_key(key)}"']
        if seed_data and app_id in seed_data:
            lines.append(f'seed_data = "{seed_data[app_id]}"')
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


# --- search.toml ----------------------------------------------------------------------------------

def parse_search_settings(raw: Any, file: str, name: str = "") -> SearchSettings:
    """Check a parsed search.toml:

        personal_weight = 0.2        # share of the user's affinity in the result score (0 = off, <= 10)
        blocklist = ["代购", "违禁"]   # queries containing any of these never appear in hot / suggest / discover
        min_coverage = 0.5           # below this share of the query's characters matching the index, fall back
        interpret = true             # read pinyin, correct typos and homophones (search/interpret.py)
    """
    table = Table(raw, file, name, ("personal_weight", "blocklist", "min_coverage", "interpret"))
    defaults = SearchSettings()
    return SearchSettings(personal_weight=table.number("personal_weight", defaults.personal_weight, 0.0, 10.0),
                          blocklist=table.strings("blocklist"),
                          min_coverage=table.number("min_coverage", defaults.min_coverage, 0.0, 1.0),
                          interpret=table.boolean("interpret", defaults.interpret))


class AppSearchSettings:
    """The search settings an app's requests use: those of its app table (`[apps.<id>.search]`, or
    set through the admin API) when it has them, else its search.toml (`SearchSettingsFile`).

    `config` gives the server's current config, so a change of the app table applies at once."""

    def __init__(self, app_id: str, file: "SearchSettingsFile", config: Callable[[], ServerConfig]) -> None:
        self.app_id, self.file, self._config = app_id, file, config

    def get(self) -> SearchSettings:
        """The settings in force."""
        app = self._config().apps.get(self.app_id)
        if app is not None and app.search is not None:
            return app.search
        return self.file.get()

    @property
    def last_error(self) -> str | None:
        """The search.toml error, if the file is broken."""
        return self.file.last_error


class SearchSettingsFile:
    """One app's search settings from `<folder>/search.toml`, re-read when the file changes (its
    modification time is checked at most once a second).

    The file sits next to the app's bundles so that operations can edit a blocklist for every
    replica without retraining or restarting: a missing file means the defaults; a broken one is
    logged, kept in `last_error`, and the last good settings stay in force."""

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / SEARCH_FILE
        self._settings = SearchSettings()
        self._mtime: float | None = None
        self._checked = float("-inf")
        self.last_error: str | None = None

    def get(self) -> SearchSettings:
        """The settings in force (re-reads the file if it changed since the last check)."""
        now = time.monotonic()
        if now - self._checked >= SEARCH_CHECK_EVERY_S:
            self._checked = now
            self._reload()
        return self._settings

    def _reload(self) -> None:
        try:
            mtime = os.stat(self.path).st_mtime
        except FileNotFoundError:
            if self._mtime is not None:
                self._settings, self._mtime = SearchSettings(), None
            return
        except OSError as exc:
            self.last_error = str(exc)
            return
        if mtime == self._mtime:
            return
        try:
            self._settings = parse_search_settings(tomllib.loads(self.path.read_text(encoding="utf-8")),
                                                   str(self.path))
            self.last_error = None
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, ServerConfigError) as exc:
            self.last_error = str(exc)
            log.error("%s not applied, keeping the previous search settings: %s", self.path, exc)
        self._mtime = mtime
