"""`POST events`: a batch of user events, validated one by one, logged durably, applied to Redis."""

from __future__ import annotations

import time

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from features.store import EventRecord
from serving.deps import AppId, Context
from serving.schemas import EventIn, EventsIn, EventsOut, Rejected

router = APIRouter(prefix="/v1/apps/{app_id}", tags=["events"])


def _reason(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'event'}: {e['msg']}" for e in exc.errors())


@router.post("/events", response_model=EventsOut, summary="Record a batch of events (idempotent by event_id)",
             responses={422: {"description": "every event of the batch was rejected"}})
def post_events(ctx: Context, app_id: AppId, body: EventsIn) -> EventsOut | JSONResponse:
    """Valid events are kept even when others in the batch are rejected; the response lists each
    rejected event with its index and reason. Accepted events are appended to the durable event log
    (fsync'd before this returns) and then applied to Redis; if Redis is unreachable they stay in the
    log (`degraded: true`) and reach the models with the next training."""
    now = time.time()
    loaded = ctx.registry.get(app_id)
    records: list[EventRecord] = []
    rejected: list[Rejected] = []
    for index, raw in enumerate(body.events):
        try:
            event = EventIn.model_validate(raw)
            category = None
            if event.item_id and loaded is not None and (i := loaded.models.items.get(event.item_id)) is not None:
                category = str(loaded.catalog.categories[i])
            records.append(EventRecord(event_id=event.event_id, user_id=event.user_id, type=event.type,
                                       ts=event.ts if event.ts is not None else now, item_id=event.item_id,
                                       query=event.query, request_id=event.request_id, category=category,
                                       value=event.value))
        except ValidationError as exc:
            rejected.append(Rejected(index=index, reason=_reason(exc)))
        except ValueError as exc:
            rejected.append(Rejected(index=index, reason=str(exc)))
    if records:
        ctx.eventlog.append(app_id, [{**vars(r), "received": now} for r in records])
    applied, degraded = ctx.gate.try_run(lambda: ctx.stores[app_id].record(records)) if records else ([], False)
    accepted = sum(applied) if applied is not None else len(records)
    duplicates = len(records) - accepted if applied is not None else 0
    metrics = ctx.metrics.events
    metrics.labels(app=app_id, outcome="accepted").inc(accepted)
    metrics.labels(app=app_id, outcome="duplicate").inc(duplicates)
    metrics.labels(app=app_id, outcome="rejected").inc(len(rejected))
    out = EventsOut(accepted=accepted, duplicates=duplicates, rejected=rejected, degraded=degraded)
    if rejected and not records:
        return JSONResponse(out.model_dump(), status_code=422)
    return out
