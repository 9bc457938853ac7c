"""The merchant's analytics document (docs/experiments.md): per scene and variant, experiments with
their lifts, search by source, and the activity over time — all from the durable event log."""

from __future__ import annotations

import datetime as dt
import json
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

from analytics.campaigns import campaign_doc
from analytics.credit import DEFAULT_WINDOW_HOURS, credited_events, log_files
from analytics.stats import Estimate, lift_dict, ratio
from features.eventstream import is_stream_url, iter_stream_events
from vocab.experiments import Experiment

#: Metrics of a scene × variant cell, each (numerator, denominator or None for a per-user mean).
METRICS: dict[str, tuple[str, str | None]] = {
    "exposure_per_user": ("items", None), "ctr": ("clicks", "impressions"), "conversion": ("buyer", None),
    "gmv_per_user": ("gmv", None), "search_pv_per_user": ("searches", None)}
#: Lists of queries in the document.
TOP_QUERIES = 20


def _per_user(con: duckdb.DuckDBPyConnection) -> dict[tuple, dict[str, np.ndarray]]:
    """Per (scene, experiment, variant): per-user arrays of the counts behind METRICS. A user is in
    a cell when at least one of their events is credited to it; searches are all the user's searches
    in the period (a search-box experiment changes how much they search at all)."""
    rows = con.execute("""
        WITH searches AS (
            SELECT user_id, count(*) AS searches FROM credited WHERE type = 'search' GROUP BY user_id
        ), cells AS (
            SELECT scene, experiment, variant, user_id,
                   count(*) FILTER (WHERE type = 'impression' AND item_id IS NOT NULL) AS impressions,
                   count(DISTINCT item_id) FILTER (WHERE type = 'impression') AS items,
                   count(*) FILTER (WHERE type = 'click') AS clicks,
                   count(*) FILTER (WHERE type = 'purchase') AS purchases,
                   coalesce(sum(amount) FILTER (WHERE type = 'purchase'), 0) AS gmv
            FROM credited WHERE scene IS NOT NULL GROUP BY ALL
        )
        SELECT c.*, coalesce(s.searches, 0) AS searches FROM cells c LEFT JOIN searches s USING (user_id)
        ORDER BY scene, experiment NULLS FIRST, variant NULLS FIRST, user_id
    """).fetchnumpy()
    cells: dict[tuple, dict[str, np.ndarray]] = {}
    if not len(rows["user_id"]):
        return cells
    keys = list(zip(rows["scene"].tolist(), rows["experiment"].tolist(), rows["variant"].tolist()))
    bounds = [0] + [i for i in range(1, len(keys)) if keys[i] != keys[i - 1]] + [len(keys)]
    for lo, hi in zip(bounds, bounds[1:]):
        cell = {name: np.asarray(rows[name][lo:hi], dtype=np.float64)
                for name in ("impressions", "items", "clicks", "purchases", "gmv", "searches")}
        cell["buyer"] = (cell["purchases"] > 0).astype(np.float64)
        cells[keys[lo]] = cell
    return cells


def _estimates(cell: Mapping[str, np.ndarray]) -> dict[str, Estimate | None]:
    return {name: ratio(cell[num], cell[den] if den else None) for name, (num, den) in METRICS.items()}


def _cell_doc(cell: Mapping[str, np.ndarray], estimates: Mapping[str, Estimate | None]) -> dict[str, Any]:
    doc: dict[str, Any] = {"users": int(len(cell["clicks"])), "impressions": int(cell["impressions"].sum()),
                           "clicks": int(cell["clicks"].sum()), "purchases": int(cell["purchases"].sum()),
                           "gmv": round(float(cell["gmv"].sum()), 2)}
    for name, found in estimates.items():
        doc[name] = found.as_dict() if found is not None else None
    return doc


def _experiment_doc(experiment: Experiment, cells: Mapping[tuple, Mapping[str, np.ndarray]]) -> dict[str, Any]:
    names = [v.name for v in experiment.variants] + (["holdout"] if experiment.holdout > 0 else [])
    estimates = {name: _estimates(cells[(experiment.scene, experiment.name, name)])
                 for name in names if (experiment.scene, experiment.name, name) in cells}
    control = estimates.get(experiment.control)
    variants: dict[str, Any] = {}
    for name, found in estimates.items():
        doc = _cell_doc(cells[(experiment.scene, experiment.name, name)], found)
        if name != experiment.control and control is not None:
            doc["lift"] = {metric: lift_dict(found[metric], control[metric]) for metric in METRICS}
        variants[name] = doc
    return {"name": experiment.name, "scene": experiment.scene, "control": experiment.control,
            "holdout": experiment.holdout, "variants": variants}


def _search_doc(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    """Searches and search CTR by source (clicks on a search response, per search, users as units),
    the most searched queries and those that answered with a fallback or nothing."""
    rows = con.execute("""
        WITH searches AS (
            SELECT user_id, coalesce(source, 'typed') AS source, request_id FROM credited WHERE type = 'search'
        ), clicks AS (
            SELECT credit_id, count(*) AS clicks FROM credited
            WHERE type = 'click' AND scene = 'search' GROUP BY credit_id
        )
        SELECT s.source, s.user_id, count(*) AS searches, coalesce(sum(c.clicks), 0) AS clicks
        FROM searches s LEFT JOIN clicks c ON c.credit_id = s.request_id
        GROUP BY ALL ORDER BY s.source, s.user_id
    """).fetchnumpy()
    by_source: dict[str, Any] = {}
    sources = rows["source"].tolist() if len(rows["source"]) else []
    for source in dict.fromkeys(sources):
        mask = np.array([s == source for s in sources])
        searches, clicks = rows["searches"][mask].astype(np.float64), rows["clicks"][mask].astype(np.float64)
        ctr = ratio(clicks, searches)
        by_source[source] = {"searches": int(searches.sum()), "clicks": int(clicks.sum()), "users": int(mask.sum()),
                             "ctr": ctr.as_dict() if ctr is not None else None}

    def queries(where: str) -> list[dict[str, Any]]:
        found = con.execute(f"""
            SELECT trim(query) AS q, count(*) AS n FROM credited
            WHERE type = 'search' AND query IS NOT NULL AND trim(query) <> '' AND {where}
            GROUP BY q ORDER BY n DESC, q LIMIT {TOP_QUERIES}""").fetchall()
        return [{"query": q, "count": int(n)} for q, n in found]

    return {"by_source": by_source, "top_queries": queries("true"),
            "zero_result_queries": queries("outcome = 'empty'"), "fallback_queries": queries("outcome = 'fallback'")}


def _risk_doc(con: duckdb.DuckDBPyConnection, kept: int) -> dict[str, Any]:
    """Traffic left out as not human (docs/risk.md): events and users by reason ("user:rate", …),
    and the share of all events of the period that it was."""
    rows = con.execute("""
        SELECT reason, count(*) AS events, count(DISTINCT user_id) AS users
        FROM risk_filtered GROUP BY reason ORDER BY events DESC, reason""").fetchall()
    filtered = sum(int(n) for _, n, _ in rows)
    users = con.execute("SELECT count(DISTINCT user_id) FROM risk_filtered").fetchone()
    return {"filtered_events": filtered, "filtered_users": int(users[0]) if users else 0,
            "filtered_share": round(filtered / (filtered + kept), 6) if filtered + kept else 0.0,
            "by_reason": [{"reason": r, "events": int(n), "users": int(u)} for r, n, u in rows]}


def _timeseries(con: duckdb.DuckDBPyConnection, start: float, end: float) -> list[dict[str, Any]]:
    step = 3600.0 if end - start <= 3 * 86400 else 86400.0
    rows = con.execute(f"""
        SELECT floor(ts / {step}) * {step} AS t,
               count(*) FILTER (WHERE type = 'impression' AND item_id IS NOT NULL) AS impressions,
               count(*) FILTER (WHERE type = 'click') AS clicks,
               count(*) FILTER (WHERE type = 'purchase') AS purchases,
               coalesce(sum(amount) FILTER (WHERE type = 'purchase'), 0) AS gmv,
               count(*) FILTER (WHERE type = 'search') AS searches,
               count(DISTINCT user_id) AS users
        FROM credited GROUP BY t ORDER BY t""").fetchall()
    return [{"t": float(t), "impressions": int(i), "clicks": int(c), "purchases": int(p), "gmv": round(float(g), 2),
             "searches": int(s), "users": int(u)} for t, i, c, p, g, s, u in rows]


def parse_time(value: str | None, name: str) -> float | None:
    """Unix seconds, or an ISO date / date-time (UTC unless it names a zone); None for an empty value.
    ValueError names `name` (the report's window bounds, as given to the API or the CLI)."""
    if value is None or value == "":
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(f"{name}: {value!r} is neither Unix seconds nor an ISO date (2026-11-30 or "
                         "2026-11-30T12:00)") from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return when.timestamp()


def build_report(log_dir: str | Path, app: str, start: float | None = None, end: float | None = None,
                 experiments: Mapping[str, Experiment] | None = None,
                 window_hours: float = DEFAULT_WINDOW_HOURS, stream: str = "MINIREC_EVENTS") -> dict[str, Any]:
    """The analytics document of `app` for events with ts in [start, end) (default: the last 7 days)
    from the event log in `log_dir` (a folder, or the nats:// URL of the event stream `stream`);
    `experiments` are the app's experiments by scene (minirec.toml)."""
    end = time.time() + 1 if end is None else float(end)
    start = end - 7 * 86400 if start is None else float(start)
    if start >= end:
        raise ValueError(f"from ({start}) must be before to ({end})")
    if window_hours < 0:
        raise ValueError("the credit window must be >= 0 hours")
    with tempfile.TemporaryDirectory(prefix="minirec-report-") as scratch:
        if is_stream_url(str(log_dir)):  # the stream, read once into a JSON-lines file DuckDB reads as the log
            files = [Path(scratch) / "events.jsonl"]
            with files[0].open("w", encoding="utf-8") as out:
                for event in iter_stream_events(str(log_dir), app, stream):
                    out.write(json.dumps(event, ensure_ascii=False) + "\n")
        else:
            files = log_files(Path(log_dir), app, start, end, window_hours)
        con = credited_events(files, start, end, window_hours)
    try:
        by_type = dict(con.execute("SELECT type, count(*) FROM credited GROUP BY type ORDER BY type").fetchall())
        cells = _per_user(con)
        scenes = [{"scene": scene, "experiment": exp, "variant": var, **_cell_doc(cell, _estimates(cell))}
                  for (scene, exp, var), cell in cells.items()]
        configured = list((experiments or {}).values())
        return {
            "app": app, "from": start, "to": end, "credit_window_hours": window_hours,
            "events": {"total": int(sum(by_type.values())), "by_type": {k: int(v) for k, v in by_type.items()}},
            "scenes": scenes,
            "experiments": [_experiment_doc(e, cells) for e in configured],
            "search": _search_doc(con),
            "timeseries": _timeseries(con, start, end),
            "campaigns": campaign_doc(con, window_hours),  # placements of lookalike audiences
            "risk": _risk_doc(con, int(sum(by_type.values()))),
        }
    finally:
        con.close()
