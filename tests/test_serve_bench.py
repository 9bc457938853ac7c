"""`minirec bench serve` in a tiny configuration: the JSON has the issue's shape and sane numbers."""

from __future__ import annotations

import json
import math
import socket
from pathlib import Path

import pytest

from bench.serve_bench import run_serve_bench


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.slow
def test_serve_bench_tiny(tmp_path: Path) -> None:
    out = tmp_path / "serve.json"
    result = run_serve_bench(str(out), workdir=tmp_path / "work", duration_s=1.5, workers=1, concurrency=8,
                             trials=5, users=300, items=200, events=8000)
    written = json.loads(out.read_text())
    assert written == json.loads(json.dumps(result))
    for endpoint in ("bare", "home", "suggest", "search", "events"):
        numbers = written[endpoint]
        assert {"rps", "p50_ms", "p99_ms"} <= set(numbers)
        assert numbers["rps"] > 0
        assert 0 < numbers["p50_ms"] <= numbers["p99_ms"]
        assert numbers["peak"]["p50_ms"] <= numbers["peak"]["p99_ms"]
        assert numbers["peak"]["errors"] == 0 and numbers["half_rate"]["errors"] == 0
    assert math.isclose(written["ratio_home_bare"], written["home"]["rps"] / written["bare"]["rps"], rel_tol=1e-2)
    assert math.isclose(written["ratio_suggest_p99_bare_p99"], written["suggest"]["p99_ms"] / written["bare"]["p99_ms"],
                        rel_tol=1e-2)
    assert set(written["suggest"]["half_rate"]["by_kind"]) == {"text", "pinyin", "initials"}
    same = written["bare_at_suggest_rate"]
    assert same["errors"] == 0 and same["target_rps"] == written["suggest"]["half_rate"]["target_rps"]
    assert math.isclose(written["ratio_suggest_p99_bare_p99_same_rate"], written["suggest"]["p99_ms"] / same["p99_ms"],
                        rel_tol=1e-2)
    assert {"typed", "pinyin", "initials"} <= set(written["search"]["half_rate"]["by_kind"])
    at_search = written["bare_at_search_rate"]
    assert math.isclose(written["ratio_search_p99_bare_p99_same_rate"], written["search"]["p99_ms"] / at_search["p99_ms"],
                        rel_tol=1e-2)
    # every bench event was logged once: no phase repeated an event_id (a duplicate is a cheaper path)
    logged = [json.loads(line)["event_id"] for f in (tmp_path / "work" / ".minirec-state" / "events").rglob("*.jsonl")
              for line in f.read_text().splitlines()]
    bench_ids = [e for e in logged if e.startswith("bench-")]
    assert len(bench_ids) == len(set(bench_ids)) >= written["events"]["peak"]["requests"]
    delay = written["event_to_feed_ms"]
    assert delay["trials"] == 5 and 0 < delay["p50"] <= delay["p99"]
    # the mix really reaches the three scoring paths
    assert set(written["strategies"]["known"]) == {"als"}
    assert set(written["strategies"]["cold"]) == {"hybrid"}
    assert set(written["strategies"]["unknown"]) == {"popularity"}
    for start in written["setup"]["server_starts"]:
        assert start["port_freed"] and _port_free(start["port"])
