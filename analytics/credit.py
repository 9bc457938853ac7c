"""The event log in DuckDB, each event credited to the scene and variant of the response behind it.

The log (`features/eventlog.py`) is read as written: JSON lines, one file per UTC day of receipt,
torn lines skipped, the first of each event_id kept (as the export does). The request_id names the
scene, the search outcome and the variant (`vocab/experiments.py`); an outcome event without one
gets the latest earlier touch of the same user on the same item within the credit window (last touch).
Traffic judged not human (docs/risk.md) is left out: events logged with a `flag`, and every event of a
user flagged "user:…" in the period read; table `risk_filtered` says how many, by reason.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb

from features.keys import check_app
from vocab.experiments import REQUEST_SCENES

#: Outcomes credited by last touch when they come without a request_id.
OUTCOMES = ("click", "favorite", "cart", "purchase")
DEFAULT_WINDOW_HOURS = 24.0
_COLUMNS = ("{event_id: 'VARCHAR', user_id: 'VARCHAR', type: 'VARCHAR', ts: 'DOUBLE', item_id: 'VARCHAR', "
            "query: 'VARCHAR', request_id: 'VARCHAR', amount: 'DOUBLE', source: 'VARCHAR', received: 'DOUBLE', flag: 'VARCHAR'}")


def log_files(log_dir: Path, app: str, start: float, end: float, window_hours: float) -> list[Path]:
    """The app's daily files that can hold events of [start − window, end): a day either side, since
    an event's own ts may differ from the day it was received."""
    folder = Path(log_dir) / check_app(app)
    if not folder.is_dir():
        return []
    first = dt.datetime.fromtimestamp(start - window_hours * 3600, dt.timezone.utc).date() - dt.timedelta(days=1)
    last = dt.datetime.fromtimestamp(min(end, 4_102_444_800), dt.timezone.utc).date() + dt.timedelta(days=1)
    files = []
    for path in sorted(folder.glob("events-*.jsonl")):
        try:
            day = dt.datetime.strptime(path.stem.removeprefix("events-"), "%Y%m%d").date()
        except ValueError:
            continue
        if first <= day <= last:
            files.append(path)
    return files


def credited_events(files: list[Path], start: float, end: float,
                    window_hours: float = DEFAULT_WINDOW_HOURS) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection holding table `credited`: the events of [start, end) with their `scene`,
    `outcome` (search: fallback / empty), `experiment` and `variant` (NULL where nothing credits them)."""
    con = duckdb.connect()
    con.execute("SET threads TO 1")  # a report is small; leave the cores to the server
    scenes = ", ".join(f"'{s}'" for s in REQUEST_SCENES)
    if files:
        paths = "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in files) + "]"
        source = (f"read_json({paths}, format = 'newline_delimited', ignore_errors = true, "
                  f"columns = {_COLUMNS})")
    else:
        source = ("(SELECT NULL::VARCHAR event_id, NULL::VARCHAR user_id, NULL::VARCHAR type, NULL::DOUBLE ts, "
                  "NULL::VARCHAR item_id, NULL::VARCHAR query, NULL::VARCHAR request_id, NULL::DOUBLE amount, "
                  "NULL::VARCHAR source, NULL::DOUBLE received, NULL::VARCHAR flag WHERE false)")
    window_s = window_hours * 3600.0
    con.execute(f"""
        CREATE TABLE raw AS
        SELECT * FROM {source}
        WHERE event_id IS NOT NULL AND type IS NOT NULL AND ts IS NOT NULL AND user_id IS NOT NULL
          AND ts >= {start - window_s} AND ts < {end}
        QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY received NULLS LAST) = 1
    """)
    # not human: the user's own flag reason covers their unflagged (earlier) events too
    con.execute(f"""
        CREATE TABLE risk_filtered AS
        WITH bots AS (
            SELECT user_id, min(flag) AS user_flag FROM raw WHERE flag LIKE 'user:%' GROUP BY user_id
        )
        SELECT r.user_id, r.type, coalesce(r.flag, b.user_flag) AS reason
        FROM raw r LEFT JOIN bots b USING (user_id)
        WHERE (r.flag IS NOT NULL OR b.user_id IS NOT NULL) AND r.ts >= {start}
    """)
    con.execute("""
        DELETE FROM raw WHERE flag IS NOT NULL
           OR user_id IN (SELECT user_id FROM raw WHERE flag LIKE 'user:%')
    """)
    con.execute(f"""
        CREATE TABLE tagged AS
        SELECT *, CASE WHEN scene_token IN ({scenes}) THEN scene_token END AS scene
        FROM (
            SELECT *, split_part(split_part(request_id, '.', 2), '+', 1) AS scene_token,
                   nullif(split_part(split_part(request_id, '.', 2), '+', 2), '') AS outcome,
                   nullif(split_part(request_id, '.', 3), '') AS experiment,
                   nullif(split_part(request_id, '.', 4), '') AS variant
            FROM raw
        )
    """)
    outcomes = ", ".join(f"'{o}'" for o in OUTCOMES)
    con.execute(f"""
        CREATE TABLE credited AS
        WITH touches AS (
            SELECT user_id, item_id, ts, scene, outcome, experiment, variant, request_id
            FROM tagged WHERE scene IS NOT NULL AND item_id IS NOT NULL
        ), orphans AS (
            SELECT * FROM tagged WHERE scene IS NULL AND type IN ({outcomes}) AND item_id IS NOT NULL
        ), last_touch AS (
            SELECT o.event_id, t.ts AS touch_ts, t.scene, t.outcome, t.experiment, t.variant, t.request_id
            FROM orphans o ASOF JOIN touches t
              ON o.user_id = t.user_id AND o.item_id = t.item_id AND o.ts >= t.ts
        )
        SELECT e.event_id, e.user_id, e.type, e.ts, e.item_id, e.query, e.source,
               coalesce(e.amount, 0.0) AS amount,
               coalesce(e.scene, l.scene) AS scene, coalesce(e.outcome, l.outcome) AS outcome,
               coalesce(e.experiment, l.experiment) AS experiment, coalesce(e.variant, l.variant) AS variant,
               coalesce(e.request_id, l.request_id) AS credit_id, e.request_id
        FROM tagged e
        LEFT JOIN last_touch l ON e.event_id = l.event_id AND e.ts - l.touch_ts <= {window_s}
        WHERE e.ts >= {start}
    """)
    con.execute("DROP TABLE raw")
    con.execute("DROP TABLE tagged")
    return con
