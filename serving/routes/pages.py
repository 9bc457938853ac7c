"""The merchant dashboard and the demo storefront (being written)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["pages"])
