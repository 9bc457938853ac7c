"""`minirec bench profile`: samples are charged to the right layer, and a tiny run works end to end."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.profile_serve import layer_of, run_profile, summarize

BASE = "Runner.run (asyncio/runners.py:118);run_asgi (uvicorn/protocols/http/httptools_impl.py:422)"
APP = BASE + ";FastAPI.__call__ (fastapi/applications.py:1224);solve (fastapi/dependencies/utils.py:570)"


def test_each_sample_goes_to_its_innermost_layer():
    route = APP + ";home (serving/routes/recommend.py:80)"
    assert layer_of((route + ";score_user (serving/pipeline.py:92);_wrapfunc (numpy/_core/fromnumeric.py:54)")
                    .split(";")) == "models and rules"
    # a Redis reply read inside asyncio's stream code is still the Redis client's time
    assert layer_of((route + ";read (redis/_parsers/hiredis.py:192);readexactly (asyncio/streams.py:750)")
                    .split(";")) == "redis client"
    assert layer_of(route.split(";")) == "route code"
    assert layer_of(APP.split(";")) == "fastapi, starlette, pydantic"
    assert layer_of((APP + ";send (uvicorn/protocols/http/httptools_impl.py:524)").split(";")) == "uvicorn, event loop"
    assert layer_of(["Runner.run (asyncio/runners.py:118)", "select (selectors.py:468)"]) == "uvicorn, event loop"
    assert layer_of(["<module> (minirec/cli.py:368)"]) == "other"


def test_summary_splits_the_measured_cpu_by_share(tmp_path: Path):
    raw = tmp_path / "raw.txt"
    raw.write_text(f"{APP};home (serving/routes/recommend.py:80);rank (serving/pipeline.py:194) 30\n"
                   f"{APP} 10\n", encoding="utf-8")
    result = summarize(raw, cpu_ms_per_req=2.0)
    layers = {r["name"]: r for r in result["layers"]}
    assert result["samples"] == 40
    assert layers["models and rules"]["share"] == 0.75 and layers["models and rules"]["cpu_ms_per_req"] == 1.5
    assert layers["fastapi, starlette, pydantic"]["cpu_ms_per_req"] == 0.5


@pytest.mark.slow
def test_tiny_profile_run(tmp_path: Path):
    try:
        result = run_profile("home", workdir=tmp_path / "work", duration_s=2, rate=200, concurrency=4,
                             users=300, items=200, events=8000)
    except RuntimeError as exc:
        if "py-spy" in str(exc) and ("permission" in str(exc).lower() or "needs py-spy" in str(exc)):
            pytest.skip(f"py-spy cannot run here: {exc}")
        raise
    names = {r["name"] for r in result["layers"]}
    assert result["samples"] > 0 and result["rps"] > 0
    assert {"models and rules", "redis client"} <= names
    assert sum(r["share"] for r in result["layers"]) == pytest.approx(1.0, abs=1e-3)
