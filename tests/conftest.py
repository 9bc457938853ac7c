"""Shared fixtures: where the real data sets live, and a guard that CI never skips them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(os.environ.get("MINIREC_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def shared_dataset(name: str) -> Path:
    """Path of a data set under ../shared/data; skip when absent on a user's clone, fail in CI."""
    path = SHARED_DATA / name
    if not path.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"{path} is missing: CI must run the real-data tests")
        pytest.skip(f"{path} not found (real data sets live in ../shared/data)")
    return path


@pytest.fixture(scope="session")
def ml100k() -> Path:
    return shared_dataset("ml-100k")


@pytest.fixture(scope="session")
def amazon_scientific() -> Path:
    return shared_dataset("amazon-scientific")


# Real Redis servers (embedded, external 127.0.0.1:6379, and a killable process) for every test module.
from tests.redis_fixtures import (  # noqa: E402,F401
    embedded_redis, external_redis, redis_backend, redis_cluster, redis_process, redis_single)
