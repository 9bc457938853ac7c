"""The platform's view of its users for lookalike audiences: profiles from Redis, behaviour from the
event log of every app (`LOG_DIR/<app>/events-YYYYMMDD.jsonl`), read with DuckDB as the report does."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import duckdb
import pandas as pd

from analytics.lookalike import EVENT_WEIGHTS, PlatformUsers, build_platform_users
from features.audiences import AudienceStore
from features.keys import check_app

#: Behaviour older than this is not used.
LOOKBACK_DAYS = 90


def _log_files(log_dir: Path, since: float) -> list[tuple[str, Path]]:
    """(app, file) of every app's daily files that can hold events after `since`."""
    first = dt.datetime.fromtimestamp(since, dt.timezone.utc).strftime("%Y%m%d")
    files = []
    for folder in sorted(p for p in Path(log_dir).iterdir() if p.is_dir()) if Path(log_dir).is_dir() else []:
        try:
            app = check_app(folder.name)
        except ValueError:
            continue
        for path in sorted(folder.glob("events-????????.jsonl")):
            if path.stem.removeprefix("events-") >= first:
                files.append((app, path))
    return files


def engagement_from_log(log_dir: str | Path, now: float | None = None,
                        lookback_days: float = LOOKBACK_DAYS) -> pd.DataFrame:
    """(app_id, user_id, category, type) of the engaged events of the last `lookback_days`, all apps,
    the first of each event_id per app."""
    now = time.time() if now is None else now
    since = now - lookback_days * 86400
    files = _log_files(Path(log_dir), since - 86400)
    empty = pd.DataFrame({"app_id": [], "user_id": [], "category": [], "type": []}, dtype=object)
    if not files:
        return empty
    con = duckdb.connect()
    try:
        con.execute("SET threads TO 1")
        types = ", ".join(f"'{t}'" for t in EVENT_WEIGHTS)
        parts = []
        for app in dict.fromkeys(a for a, _ in files):
            paths = "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for a, p in files if a == app) + "]"
            parts.append(f"""SELECT '{app}' AS app_id, * FROM read_json({paths}, format = 'newline_delimited',
                ignore_errors = true, columns = {{event_id: 'VARCHAR', user_id: 'VARCHAR', type: 'VARCHAR',
                ts: 'DOUBLE', category: 'VARCHAR', received: 'DOUBLE'}})""")
        return con.execute(f"""
            SELECT app_id, user_id, category, type FROM ({' UNION ALL '.join(parts)})
            WHERE event_id IS NOT NULL AND user_id IS NOT NULL AND user_id <> '' AND type IN ({types})
              AND ts >= {since} AND ts <= {now + 86400}
            QUALIFY row_number() OVER (PARTITION BY app_id, event_id ORDER BY received NULLS LAST) = 1
        """).fetchdf()
    finally:
        con.close()


def platform_users(store: AudienceStore, log_dir: str | Path, scopes: dict[str, tuple[str, ...]],
                   now: float | None = None) -> PlatformUsers:
    """Profiles in Redis + behaviour in the event log → the lookalike model's view of the platform."""
    profiles = pd.DataFrame(store.platform_profiles())
    if profiles.empty:
        profiles = pd.DataFrame({"user_id": [], "consent": []}, dtype=object)
    return build_platform_users(profiles.fillna(""), engagement_from_log(log_dir, now), scopes)
