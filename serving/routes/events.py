"""`POST events`: a batch of user events, validated one by one, logged durably once, applied to Redis."""

from __future__ import annotations

import logging
import time

from fastapi import APIRouter, Request
from pydantic import ValidationError

from features.risk import RiskSettings, client_ip, key_tag
from features.store import NEW, PENDING, PENDING_TAKEOVER_S, EventRecord
from serving.deps import AppId, Context
from serving.errors import ApiError
from serving.schemas import ErrorOut, EventIn, EventsIn, EventsOut, Rejected

router = APIRouter(prefix="/v1/apps/{app_id}", tags=["events"])
log = logging.getLogger("minirec.serving")


def _reason(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'event'}: {e['msg']}" for e in exc.errors())


@router.post("/events", response_model=EventsOut, summary="Record a batch of events (idempotent by event_id)",
             responses={422: {"model": ErrorOut, "description": "every event of the batch was rejected"},
                        503: {"model": ErrorOut, "description": "the event log could not be written: retry"}})
def post_events(ctx: Context, app_id: AppId, body: EventsIn, request: Request) -> EventsOut:
    """Valid events are kept even when others in the batch are rejected; the response lists each
    rejected event with its index and reason. Each new event id is claimed in Redis, the new events
    are appended to the durable event log (fsync'd before this returns) and then applied to Redis,
    so a retried batch is logged once. If Redis is unreachable every valid event is logged
    (`degraded: true`; the export keeps the first of each event id) and reaches the models with the
    next training. If the log cannot be written, nothing is acknowledged: 503, retry. Fresh events
    are risk-scored before logging (docs/risk.md): those of a user or source judged not human are
    logged with a `flag` and kept out of shared counters, training exports and analytics."""
    now = time.time()
    loaded = ctx.registry.get(app_id)
    records: list[EventRecord] = []
    positions: list[int] = []  # each record's index in the batch
    rejected: list[Rejected] = []
    for index, raw in enumerate(body.events):
        try:
            event = EventIn.model_validate(raw)
            category, amount = None, event.amount
            catalog = loaded.catalog.state if loaded is not None else None
            if event.item_id and catalog is not None and (i := catalog.position(event.item_id)) is not None:
                category = catalog.category(i)
                if amount is None and event.type == "purchase":
                    amount = catalog.price(i)
            source = event.source or ("typed" if event.type == "search" else None)
            records.append(EventRecord(event_id=event.event_id, user_id=event.user_id, type=event.type,
                                       ts=event.ts if event.ts is not None else now, item_id=event.item_id,
                                       query=event.query, request_id=event.request_id, category=category,
                                       value=event.value, source=source, amount=amount))
            positions.append(index)
        except ValidationError as exc:
            rejected.append(Rejected(index=index, reason=_reason(exc)))
        except ValueError as exc:
            rejected.append(Rejected(index=index, reason=str(exc)))
    if rejected and not records:
        raise ApiError(422, "invalid_request", "every event was rejected: " + "; ".join(
            f"[{r.index}] {r.reason}" for r in rejected[:10]) + (" …" if len(rejected) > 10 else ""))
    store = ctx.stores[app_id]
    claimed, degraded = ctx.gate.try_run(lambda: store.claim_states(records))
    fresh = records if claimed is None else [r for r, state in zip(records, claimed) if state == NEW]
    if claimed is not None:  # another request holds these and has not logged them yet: not duplicates
        in_flight = [index for index, state in zip(positions, claimed) if state == PENDING]
        rejected += [Rejected(index=index, reason=f"being recorded by another request; retry in "
                                                  f"{PENDING_TAKEOVER_S:.0f} s") for index in in_flight]
        rejected.sort(key=lambda r: r.index)
    verdict = None
    if claimed is not None and fresh:
        app = ctx.config.apps.get(app_id)
        risk = app.risk if app is not None else RiskSettings()
        ip = client_ip(request.client.host if request.client else None,
                       request.headers.get("x-forwarded-for"), risk.trusted_proxies)
        key = key_tag(request.headers.get("x-api-key"))
        verdict, degraded = ctx.gate.try_run(lambda: store.score(fresh, risk, ip, key, stamped_at=now))
    try:
        # `flag` only when set: the log's records stay as they were for unflagged events
        ctx.eventlog.append(app_id, [{**{k: v for k, v in vars(r).items() if k != "flag" or v},
                                      "received": now} for r in fresh])
    except OSError as exc:
        log.error("app %s: event log not written (%s); %d events refused", app_id, exc, len(fresh))
        if claimed is not None:
            ctx.gate.try_run(lambda: store.release(fresh))
        raise ApiError(503, "unavailable", "the event log cannot be written right now; nothing was recorded, "
                                           "retry the batch") from exc
    if claimed is not None and fresh:
        _, apply_degraded = ctx.gate.try_run(lambda: store.apply(fresh, verdict))
        degraded = degraded or apply_degraded
    accepted = len(fresh)
    duplicates = len(records) - accepted - (sum(state == PENDING for state in claimed) if claimed is not None else 0)
    metrics = ctx.metrics.events
    metrics.labels(app=app_id, outcome="accepted").inc(accepted)
    metrics.labels(app=app_id, outcome="duplicate").inc(duplicates)
    metrics.labels(app=app_id, outcome="rejected").inc(len(rejected))
    return EventsOut(accepted=accepted, duplicates=duplicates, rejected=rejected, degraded=degraded)
