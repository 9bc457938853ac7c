"""The merchant dashboard (`/dashboard`), the demo storefront (`/demo`) and the model-info route the
dashboard reads (`GET /v1/apps/{app_id}/models`).

The pages are static files in `serving/pages/` (plain HTML, JS and CSS: no build step, no CDN, so they
work offline). They hold no data: their scripts call the API with the key the user gives them, so
serving them needs no key, and the pages are left out of the OpenAPI schema.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from recsys import bundle
from serving.context import ServingContext
from serving.deps import AppOrAdmin
from serving.errors import ApiError
from serving.schemas import ErrorOut

router = APIRouter(tags=["pages"])

PAGES_DIR = Path(__file__).resolve().parent.parent / "pages"
_MEDIA_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
                ".svg": "image/svg+xml", ".html": "text/html; charset=utf-8"}
#: The pages' scripts only talk to this server; nothing inline, nothing from elsewhere. `no-referrer`
#: because the dashboard may be opened with `?key=` in its address.
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
                               "frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}
#: Versions listed by the models route, newest first (a long-lived app may keep hundreds on disk).
MAX_VERSIONS = 20


def _page(name: str) -> FileResponse:
    return FileResponse(PAGES_DIR / name, media_type=_MEDIA_TYPES[".html"], headers=_PAGE_HEADERS)


@router.api_route("/dashboard", methods=["GET", "HEAD"], include_in_schema=False)
async def dashboard() -> FileResponse:
    """Merchant dashboard: experiments, CTR / GMV over time, search, models (`?app=`, `?key=`)."""
    return _page("dashboard.html")


@router.api_route("/demo", methods=["GET", "HEAD"], include_in_schema=False)
async def demo() -> FileResponse:
    """Demo storefront that behaves like a mini-program (`?app=`, `?key=`, `?known=`, `?newcomer=`)."""
    return _page("demo.html")


@router.api_route("/pages/{name}", methods=["GET", "HEAD"], include_in_schema=False)
async def asset(name: str) -> FileResponse:
    """The pages' scripts and styles: only files directly in serving/pages with a known suffix (a name
    is looked up among the folder's files, never joined into a path, so `..` cannot escape it)."""
    files = {p.name: p for p in PAGES_DIR.iterdir() if p.is_file() and p.suffix in _MEDIA_TYPES}
    path = files.get(name)
    if path is None or path.suffix == ".html":
        raise ApiError(404, "not_found", f"no page asset {name!r}")
    return FileResponse(path, media_type=_MEDIA_TYPES[path.suffix], headers=_PAGE_HEADERS)


# --- model info ---------------------------------------------------------------------------------


class LoadedOut(BaseModel):
    version: str | None = Field(description="The version this server answers with (null: none loaded yet)")
    loaded_at: float | None = Field(default=None, description="Unix seconds")
    last_error: str | None = Field(default=None, description="Why the last reload was refused, if it was")


class VersionOut(BaseModel):
    version: str
    created_at: str | None = None
    published: bool = Field(description="The app's `current` pointer names this version")
    loaded: bool = Field(description="This server answers with this version")
    metrics: dict[str, Any] = Field(default_factory=dict, description="Offline evaluation per protocol: "
                                    "`{protocol: {model: {ndcg@10, …}, popularity: {…}, n_users}}`")
    gate: dict[str, Any] | None = Field(default=None, description="The publish gate's verdict")
    training: dict[str, Any] | None = Field(default=None, description="Training time, memory and data size")
    tuning: dict[str, Any] | None = Field(default=None, description="What tuning chose (the bundle's "
                                          "report.json `tuning`, with trial lists reduced to their count)")
    error: str | None = Field(default=None, description="Why the manifest could not be read")


class ModelsOut(BaseModel):
    app_id: str
    loaded: LoadedOut
    published: str | None = Field(description="The version the `current` pointer names")
    total_versions: int
    versions: list[VersionOut] = Field(description=f"Newest first, at most {MAX_VERSIONS}")


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    return value if isinstance(value, dict) else None


def _tuning_summary(tuning: Any) -> dict[str, Any] | None:
    """The report's tuning part without the per-trial lists (hundreds of rows the dashboard does not show)."""
    if not isinstance(tuning, dict):
        return None
    out: dict[str, Any] = {"skipped": tuning.get("skipped") or []}
    for part in ("known", "cold"):
        found = tuning.get(part)
        if isinstance(found, dict):
            trials = found.get("trials")
            out[part] = {**{k: v for k, v in found.items() if k != "trials"},
                         "n_trials": len(trials) if isinstance(trials, list) else trials}
        else:
            out[part] = None
    return out


def _version_info(folder: Path, published: str | None, loaded: str | None) -> VersionOut:
    """One version's manifest facts, read without hashing its files (listing must stay cheap)."""
    name = folder.name
    try:
        manifest = _read_json(folder / bundle.MANIFEST)
        if manifest is None:
            raise ValueError(f"no readable {bundle.MANIFEST}")
        report = _read_json(folder / "report.json") or {}
        return VersionOut(version=str(manifest.get("version", name)), created_at=manifest.get("created_at"),
                          published=name == published, loaded=name == loaded,
                          metrics=manifest.get("metrics") or {}, gate=manifest.get("gate"),
                          training=manifest.get("training"), tuning=_tuning_summary(report.get("tuning")))
    except (OSError, ValueError) as exc:  # one broken version must not hide the others
        return VersionOut(version=name, published=name == published, loaded=name == loaded,
                          error=f"{type(exc).__name__}: {exc}")


@router.get("/v1/apps/{app_id}/models", response_model=ModelsOut, tags=["models"],
            summary="The app's loaded model version and its bundles on disk (app key or admin key)",
            responses={401: {"model": ErrorOut, "description": "No or unknown API key"},
                       403: {"model": ErrorOut, "description": "The key is neither this app's nor the admin key"},
                       404: {"model": ErrorOut, "description": "Admin key and an app not in minirec.toml"}})
def models(request: Request, app_id: AppOrAdmin) -> ModelsOut:
    """The version this server answers with, the published one, and per version on disk (newest
    first) its manifest's `version`, `created_at`, offline `metrics`, publish `gate`, `training` facts
    and the tuning report. A plain `def`: it reads files, so FastAPI runs it off the event loop."""
    ctx: ServingContext = request.app.state.ctx
    status = next((s for s in ctx.registry.status() if s["app_id"] == app_id), {})
    loaded = LoadedOut(version=status.get("version"), loaded_at=status.get("loaded_at"),
                       last_error=status.get("last_error"))
    artifacts = ctx.config.artifacts
    names = bundle.versions(artifacts, app_id)
    published = bundle.current_version(artifacts, app_id)
    root = bundle.app_dir(artifacts, app_id)
    listed = [_version_info(root / name, published, loaded.version) for name in reversed(names[-MAX_VERSIONS:])]
    return ModelsOut(app_id=app_id, loaded=loaded, published=published, total_versions=len(names), versions=listed)
