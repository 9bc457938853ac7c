"""`minirec.toml`: the server's apps, their API keys (stored as sha256) and scene rules.

Keys are random tokens of at least 16 characters, so a plain sha256 is enough to store them (no
salt or slow hash needed: there is nothing to brute-force in a high-entropy token). Comparisons are
constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recsys.bundle import check_app_name
from serving.experiments import Experiment, ExperimentError, parse_experiments
from serving.scenes import SceneRules, parse_scenes

MIN_KEY_LENGTH = 16
#: Requests per second per API key unless minirec.toml says otherwise: the peak one provider saw
#: for a whole deployment, so it only stops a runaway client.
DEFAULT_RATE_LIMIT = 5000


class TenancyError(ValueError):
    """minirec.toml is missing, unreadable or inconsistent; the message says where."""


def hash_key(key: str) -> str:
    """The stored form of an API key."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    """A fresh random API key."""
    return "mr_" + secrets.token_urlsafe(24)


def key_matches(key: str | None, digest: str) -> bool:
    """Whether `key` is the key stored as `digest`; keys shorter than MIN_KEY_LENGTH never are."""
    return key is not None and len(key) >= MIN_KEY_LENGTH and hmac.compare_digest(hash_key(key), digest)


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
class AppConfig:
    app_id: str
    key_sha256: str
    scenes: dict[str, SceneRules]
    #: Optional data folder whose profiles are loaded into Redis at start (first deployment, demo).
    seed_data: Path | None = None
    #: Requests per second this app's key may make, over all workers and replicas (0 = no limit).
    rate_limit_per_second: int = DEFAULT_RATE_LIMIT
    #: A/B experiments by scene (serving/experiments.py; at most one per scene).
    experiments: dict[str, Experiment] = field(default_factory=dict)


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

    def app_for_key(self, key: str | None) -> str | None:
        """The app id whose key this is, if any."""
        return next((a.app_id for a in self.apps.values() if key_matches(key, a.key_sha256)), None)


def _sha(table: dict[str, Any], name: str, where: str, required: bool = True) -> str | None:
    value = table.get(name)
    if value is None:
        if required:
            raise TenancyError(f"{where}: missing '{name}' (sha256 of the key; `minirec keys new` makes one)")
        return None
    if not (isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)):
        raise TenancyError(f"{where}.{name}: expected a lowercase hex sha256 (64 characters)")
    return value


def _count(table: dict[str, Any], name: str, default: int, where: str) -> int:
    value = table.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TenancyError(f"{where}.{name}: expected a whole number >= 0 (0 = no limit), got {value!r}")
    return value


def _positive_int(table: dict[str, Any], name: str, default: int, where: str) -> int:
    value = table.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise TenancyError(f"{where}.{name}: expected a whole number >= 1, got {value!r}")
    return value


def load_server_config(path: str | Path, redis_url: str | None = None) -> ServerConfig:
    """Read minirec.toml; relative paths in it are relative to the file. `redis_url` overrides the file's."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise TenancyError(f"{path}: not found (create one with `minirec serve --init`)") from exc
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise TenancyError(f"{path}: {exc}") from exc
    base = path.resolve().parent
    server = raw.get("server", {})
    apps_raw = raw.get("apps", {})
    if not apps_raw:
        raise TenancyError(f"{path}: no [apps.<id>] table")
    apps = {}
    for app_id, table in apps_raw.items():
        try:
            check_app_name(app_id)
        except ValueError as exc:
            raise TenancyError(f"{path}: {exc}") from exc
        seed = table.get("seed_data")
        try:
            experiments = parse_experiments(table.get("experiments", {}), f"[apps.{app_id}.experiments]")
        except ExperimentError as exc:
            raise TenancyError(f"{path}: {exc}") from exc
        apps[app_id] = AppConfig(
            app_id=app_id,
            key_sha256=_sha(table, "api_key_sha256", f"{path} [apps.{app_id}]") or "",
            scenes=parse_scenes(table.get("scenes", {}), f"{path} [apps.{app_id}.scenes]"),
            seed_data=(base / seed) if seed else None,
            rate_limit_per_second=_count(table, "rate_limit_per_second", DEFAULT_RATE_LIMIT,
                                         f"{path} [apps.{app_id}]"),
            experiments=experiments,
        )
    digests = [a.key_sha256 for a in apps.values()]
    if len(set(digests)) != len(digests):
        raise TenancyError(f"{path}: two apps share one API key")
    return ServerConfig(
        artifacts=base / server.get("artifacts", "artifacts"),
        state_dir=base / server.get("state_dir", ".minirec-state"),
        redis_url=redis_url if redis_url is not None else server.get("redis_url"),
        reload_interval_s=float(server.get("reload_interval_seconds", 2.0)),
        admin_key_sha256=_sha(server, "admin_key_sha256", f"{path} [server]") or "",
        platform_key_sha256=_sha(server, "platform_key_sha256", f"{path} [server]", required=False),
        apps=apps,
        ready_when_degraded=bool(server.get("ready_when_degraded", False)),
        max_body_bytes=_positive_int(server, "max_body_bytes", 2 * 1024 * 1024, f"{path} [server]"),
        redis_budget_ms=float(_positive_int(server, "redis_budget_ms", 50, f"{path} [server]")),
        platform_rate_limit_per_second=_count(server, "platform_rate_limit_per_second", DEFAULT_RATE_LIMIT,
                                              f"{path} [server]"),
        overload=_overload(server.get("overload", {}), f"{path} [server.overload]"),
        event_stream=_stream_url(server.get("event_stream"), f"{path} [server].event_stream"),
        event_stream_name=_stream_name(server.get("event_stream_name", "MINIREC_EVENTS"),
                                       f"{path} [server].event_stream_name"),
    )


def _stream_url(value: Any, where: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not value.startswith(("nats://", "tls://")):
        raise TenancyError(f"{where}: expected a nats://host:port URL, got {value!r}")
    return value


def _stream_name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value or not all(c.isalnum() or c in "_-" for c in value):
        raise TenancyError(f"{where}: expected a name of letters, digits, _ and -, got {value!r}")
    return value


def _overload(table: Any, where: str) -> OverloadSettings:
    if not isinstance(table, dict):
        raise TenancyError(f"{where}: expected a table")
    defaults = OverloadSettings()
    known = ("degrade_wait_ms", "degrade_in_flight", "shed_in_flight", "retry_after_seconds")
    unknown = set(table) - set(known)
    if unknown:
        raise TenancyError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} (known: {', '.join(known)})")
    wait = table.get("degrade_wait_ms", defaults.degrade_wait_ms)
    if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not 0 <= wait < 1e6:
        raise TenancyError(f"{where}.degrade_wait_ms: expected a number of milliseconds >= 0, got {wait!r}")
    return OverloadSettings(
        degrade_wait_ms=float(wait),
        degrade_in_flight=_count(table, "degrade_in_flight", defaults.degrade_in_flight, where),
        shed_in_flight=_count(table, "shed_in_flight", defaults.shed_in_flight, where),
        retry_after_s=_positive_int(table, "retry_after_seconds", defaults.retry_after_s, where))


def write_server_config(path: Path, apps: dict[str, str], admin_key: str, platform_key: str | None,
                        artifacts: str = "artifacts", seed_data: dict[str, str] | None = None) -> None:
    """Write a minimal minirec.toml for the given app → key pairs (keys are stored hashed); keys
    shorter than MIN_KEY_LENGTH are refused (they would never match)."""
    for name, key in [*apps.items(), ("admin", admin_key), ("platform", platform_key or "x" * MIN_KEY_LENGTH)]:
        if len(key) < MIN_KEY_LENGTH:
            raise TenancyError(f"the {name} key is shorter than {MIN_KEY_LENGTH} characters")
    lines = ["[server]", f'artifacts = "{artifacts}"', 'state_dir = ".minirec-state"',
             "reload_interval_seconds = 2.0", f'admin_key_sha256 = "{hash_key(admin_key)}"']
    if platform_key:
        lines.append(f'platform_key_sha256 = "{hash_key(platform_key)}"')
    for app_id, key in apps.items():
        lines += ["", f"[apps.{app_id}]", f'api_key_sha256 = "{hash_key(key)}"']
        if seed_data and app_id in seed_data:
            lines.append(f'seed_data = "{seed_data[app_id]}"')
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
