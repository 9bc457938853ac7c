"""`GET analytics`: the merchant's experiments, CTR, GMV and search by scene and variant, computed
from the durable event log (analytics/report.py; docs/experiments.md has the document)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from analytics.report import build_report, parse_time
from serving.deps import AppOrAdmin, Context
from serving.errors import ApiError
from serving.schemas import ErrorOut

router = APIRouter(prefix="/v1/apps/{app_id}", tags=["analytics"])


@router.get("/analytics", summary="Experiments, CTR, GMV and search by scene and variant, with 95% intervals",
            responses={404: {"model": ErrorOut, "description": "admin key and an app not in minirec.toml"}})
def analytics(ctx: Context, app_id: AppOrAdmin,
              start: Annotated[str | None, Query(alias="from", max_length=40,
                                                 description="Start: Unix seconds or ISO date (default: 7 days "
                                                             "before `to`)")] = None,
              end: Annotated[str | None, Query(alias="to", max_length=40,
                                               description="End, exclusive (default: now)")] = None,
              window_hours: Annotated[float, Query(ge=0, le=24 * 30, description="Last-touch credit window for "
                                                   "outcomes sent without a request_id")] = 24.0) -> dict[str, Any]:
    """Computed from the event log on each call (app key or admin key); events of the last few
    milliseconds may be missing while their batch is being written."""
    try:
        source = ctx.config.event_stream or ctx.config.state_dir / "events"
        return build_report(source, app_id, parse_time(start, "from"), parse_time(end, "to"),
                            ctx.config.apps[app_id].experiments, window_hours, ctx.config.event_stream_name)
    except ValueError as exc:
        raise ApiError(422, "invalid_request", str(exc)) from exc
