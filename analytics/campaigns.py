"""Campaign credit: events from the super-app's placements of a lookalike audience, per campaign.

A placement's request id (`vocab/campaigns.py`) names its campaign: an event sent with it is the
campaign's (impressions and clicks in the super-app's slot, and whatever the visitor does in the
mini-program with that request id). A click, favorite, cart or purchase sent without any request id
goes to the campaign the same user last touched within the credit window (last touch by user, not
by item: the visitor came through the slot and may buy anything). Counts are of the merchant's own
event log; no platform data is involved.
"""

from __future__ import annotations

from typing import Any

import duckdb

from vocab.campaigns import PLACEMENT


def campaign_doc(con: duckdb.DuckDBPyConnection, window_hours: float) -> list[dict[str, Any]]:
    """Per campaign: impressions, clicks, users reached, buyers, purchases, GMV, CTR and conversion,
    from the `credited` table of `analytics.credit.credited_events`."""
    window_s = float(window_hours) * 3600.0
    rows = con.execute(f"""
        WITH direct AS (
            SELECT event_id, user_id, ts, type, amount, split_part(request_id, '.', 3) AS campaign
            FROM credited WHERE split_part(request_id, '.', 2) = '{PLACEMENT}'
              AND split_part(request_id, '.', 3) <> ''
        ), orphans AS (
            SELECT event_id, user_id, ts, type, amount FROM credited
            WHERE request_id IS NULL AND type IN ('click', 'favorite', 'cart', 'purchase')
        ), carried AS (
            SELECT o.event_id, o.user_id, o.ts, o.type, o.amount, d.campaign, d.ts AS touch_ts
            FROM orphans o ASOF JOIN direct d ON o.user_id = d.user_id AND o.ts >= d.ts
        ), events AS (
            SELECT campaign, user_id, type, amount FROM direct
            UNION ALL
            SELECT campaign, user_id, type, amount FROM carried WHERE ts - touch_ts <= {window_s}
        )
        SELECT campaign,
               count(*) FILTER (WHERE type = 'impression') AS impressions,
               count(*) FILTER (WHERE type = 'click') AS clicks,
               count(DISTINCT user_id) AS users,
               count(DISTINCT user_id) FILTER (WHERE type = 'purchase') AS buyers,
               count(*) FILTER (WHERE type = 'purchase') AS purchases,
               coalesce(sum(amount) FILTER (WHERE type = 'purchase'), 0) AS gmv
        FROM events GROUP BY campaign ORDER BY campaign
    """).fetchall()
    out = []
    for campaign, impressions, clicks, users, buyers, purchases, gmv in rows:
        out.append({"campaign": campaign, "impressions": int(impressions), "clicks": int(clicks),
                    "users": int(users), "buyers": int(buyers), "purchases": int(purchases),
                    "gmv": round(float(gmv), 2),
                    "ctr": round(clicks / impressions, 4) if impressions else None,
                    "conversion": round(buyers / users, 4) if users else None})
    return out
