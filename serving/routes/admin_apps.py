"""Apps and keys managed through the API (admin key): create, list, show, change, rotate, delete, audit.

Apps live in the app store (serving/app_store.py); every replica polls it and serves a change within
two seconds (serving/live_apps.py). minirec.toml's apps are listed too, read-only. A new key is
shown once, in the answer that made it; only its sha256 is stored.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from serving.app_store import MAX_OVERLAP_S, AppExists, AppNotFound, AppStoreError, StoredApp, fingerprint
from serving.context import ServingContext
from serving.deps import Admin, Context
from serving.errors import ApiError
from serving.live_apps import LiveApps
from serving.server_config import API_APP_KEYS, AppConfig, ServerConfigError

router = APIRouter(prefix="/v1/admin/apps", tags=["admin: apps and keys"])

_SETTINGS_DOC = ("The app's tables as in an `[apps.<id>]` table of minirec.toml, in JSON: "
                 + ", ".join(f"`{k}`" for k in API_APP_KEYS) + " (docs/serving.md). Checked like the file: "
                 "an unknown key or a wrong value is a 422 naming it.")


class AppOut(BaseModel):
    app_id: str
    source: Literal["api", "file"] = Field(description="`api`: created through this API; `file`: from "
                                                       "minirec.toml (read-only here)")
    settings: dict[str, Any] | None = Field(default=None, description="The app's settings (API apps; null for "
                                                                      "file apps, whose settings are in the file)")
    key_fingerprint: str | None = Field(description="The first 12 hex digits of the key's sha256 (never the key)")
    previous_key_fingerprint: str | None = Field(default=None, description="The key replaced by the last "
                                                                           "rotation, while it is still valid")
    previous_key_valid_until: str | None = Field(default=None, description="When the previous key stops "
                                                                           "working (ISO 8601, UTC)")
    created_at: str | None = None
    updated_at: str | None = None


class AppListOut(BaseModel):
    apps: list[AppOut]
    version: int | None = Field(description="The app store's change counter this server has applied")


class AppKeyOut(BaseModel):
    app: AppOut
    api_key: str | None = Field(description="The new key: shown only in this answer, store it now "
                                            "(null when the change made no key)")


class AppCreateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    app_id: str = Field(min_length=1, max_length=64, description="Letters, digits, `_` and `-`, starting with a "
                                                                 "letter or digit (it names the bundle folder)")
    settings: dict[str, Any] = Field(default_factory=dict, description=_SETTINGS_DOC)


class AppPatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    settings: dict[str, Any] | None = Field(
        default=None, description="Tables to replace: each one named replaces the app's table of that name "
                                  "whole; null as a value removes the table (back to the defaults). " + _SETTINGS_DOC)
    rotate_key: bool = Field(default=False, description="Make a new key (shown once in the answer)")
    overlap_seconds: int = Field(default=0, ge=0, le=MAX_OVERLAP_S,
                                 description="With rotate_key: how long the old key keeps working (0: it stops "
                                             "at once; at most 7 days)")


class AuditEntryOut(BaseModel):
    app_id: str
    at: str = Field(description="When (ISO 8601, UTC)")
    actor: str = Field(description="Who: `admin:` and the admin key's fingerprint")
    action: Literal["create", "update", "rotate_key", "delete"]
    changes: dict[str, Any] = Field(description="What changed: settings tables with `from` and `to`, key "
                                                "fingerprints, the overlap")


class AuditOut(BaseModel):
    app_id: str
    entries: list[AuditEntryOut]


AppPath = Annotated[str, Path(description="The app id", min_length=1, max_length=64)]


def _live(ctx: ServingContext) -> LiveApps:
    if ctx.live_apps is None:
        raise ApiError(503, "unavailable", "this server has no app store")
    return ctx.live_apps


def _actor(ctx: ServingContext) -> str:
    """Who makes the change: the admin key's fingerprint (the only key the admin routes accept)."""
    return f"admin:{fingerprint(ctx.config.admin_key_sha256)}"


def _file_app(app: AppConfig) -> AppOut:
    return AppOut(app_id=app.app_id, source="file", key_fingerprint=fingerprint(app.key_sha256))


def _api_app(app: StoredApp) -> AppOut:
    return AppOut(**app.public())


def _read_only(live: LiveApps, app_id: str) -> None:
    if live.is_file_app(app_id):
        raise ApiError(409, "conflict", f"app {app_id!r} is defined in minirec.toml: it is read-only through "
                                        "the API (change it in the file)")


def _changed(ctx: ServingContext) -> None:
    """Apply a change on this replica at once (the others see it at their next poll)."""
    ctx.refresh_apps()


@router.post("", status_code=201, response_model=AppKeyOut,
             summary="Create an app and its key (the key is in this answer only)",
             responses={409: {"description": "The id is taken (by an app of the API or of minirec.toml)"}})
def post_app(ctx: Context, _: Admin, body: AppCreateIn) -> AppKeyOut:
    """Create an app with its settings and a new API key. Every replica serves it within 2 s;
    its models come from `ARTIFACTS/<app_id>/` once `minirec train` publishes a bundle there."""
    live = _live(ctx)
    _read_only(live, body.app_id)
    try:
        app, key = live.store.create(body.app_id, body.settings, _actor(ctx))
    except ServerConfigError as exc:
        raise ApiError(422, "invalid_request", str(exc)) from exc
    except AppExists as exc:
        raise ApiError(409, "conflict", str(exc)) from exc
    _changed(ctx)
    return AppKeyOut(app=_api_app(app), api_key=key)


@router.get("", response_model=AppListOut, summary="List every app (without keys)")
def list_apps(ctx: Context, _: Admin) -> AppListOut:
    """Apps created through the API, and minirec.toml's (read-only), by id; keys appear only as
    fingerprints."""
    live = _live(ctx)
    stored = {a.app_id: a for a in live.store.apps()}
    out = [_file_app(a) for a in live.file_config.apps.values()]
    out += [_api_app(a) for app_id, a in stored.items() if not live.is_file_app(app_id)]
    return AppListOut(apps=sorted(out, key=lambda a: a.app_id), version=live.version)


@router.get("/{app_id}", response_model=AppOut, summary="Show one app (without its key)",
            responses={404: {"description": "No such app"}})
def show_app(ctx: Context, _: Admin, app_id: AppPath) -> AppOut:
    """One app: its settings, key fingerprint, previous key while a rotation's overlap lasts."""
    live = _live(ctx)
    if live.is_file_app(app_id):
        return _file_app(live.file_config.apps[app_id])
    try:
        return _api_app(live.store.get(app_id))
    except AppNotFound as exc:
        raise ApiError(404, "not_found", str(exc)) from exc


@router.patch("/{app_id}", response_model=AppKeyOut, summary="Change an app's settings and/or rotate its key",
              responses={404: {"description": "No such app"}, 409: {"description": "A minirec.toml app"}})
def patch_app(ctx: Context, _: Admin, app_id: AppPath, body: AppPatchIn) -> AppKeyOut:
    """Replace the settings tables given (checked like minirec.toml: a bad value is a 422 naming
    it) and, with `rotate_key`, make a new key; the old one keeps working for `overlap_seconds`.
    Every replica applies it within 2 s."""
    live = _live(ctx)
    _read_only(live, app_id)
    try:
        app, key = live.store.update(app_id, body.settings or {}, _actor(ctx), rotate_key=body.rotate_key,
                                     overlap_seconds=body.overlap_seconds)
    except ServerConfigError as exc:
        raise ApiError(422, "invalid_request", str(exc)) from exc
    except AppNotFound as exc:
        raise ApiError(404, "not_found", str(exc)) from exc
    except AppStoreError as exc:
        raise ApiError(422, "invalid_request", str(exc)) from exc
    _changed(ctx)
    return AppKeyOut(app=_api_app(app), api_key=key)


@router.delete("/{app_id}", summary="Delete an app: its key stops working on every replica within 2 s",
               responses={404: {"description": "No such app"}, 409: {"description": "A minirec.toml app"}})
def delete_app(ctx: Context, _: Admin, app_id: AppPath) -> dict[str, str]:
    """Delete the app (its audit stays; its bundles, Redis data and event log are left as they are)."""
    live = _live(ctx)
    _read_only(live, app_id)
    try:
        live.store.delete(app_id, _actor(ctx))
    except AppNotFound as exc:
        raise ApiError(404, "not_found", str(exc)) from exc
    _changed(ctx)
    return {"deleted": app_id}


@router.get("/{app_id}/audit", response_model=AuditOut, summary="Who changed the app, when, and what")
def audit(ctx: Context, _: Admin, app_id: AppPath,
          limit: Annotated[int, Query(ge=1, le=1000, description="The newest entries to show")] = 100) -> AuditOut:
    """The app's changes, oldest first (also after it was deleted); keys appear as fingerprints only."""
    entries = _live(ctx).store.audit(app_id, limit)
    return AuditOut(app_id=app_id, entries=[AuditEntryOut(**e.public()) for e in entries])
