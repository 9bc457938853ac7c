"""Schemathesis against the OpenAPI schema of a running server with the synthetic mall: thousands of
generated requests (valid and invalid), zero 5xx, zero responses that break the declared schema."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.harness.server import ServerProcess
from tests.serving_fixtures import APP_KEY, build_app, server_config

MIN_REQUESTS = 2000


@pytest.mark.slow
def test_generated_requests_never_get_a_5xx_or_break_the_schema(tmp_path_factory):
    if shutil.which("schemathesis", path=str(Path(sys.executable).parent)) is None:
        pytest.fail("schemathesis is a dev dependency (pip install -e '.[dev]')")
    shop = build_app(tmp_path_factory.mktemp("fuzz-shop"))
    work = tmp_path_factory.mktemp("fuzz")
    server_config(shop, work, None)
    server = ServerProcess(work / "minirec.toml").start()
    try:
        status, schema = server.request("GET", "/openapi.json")
        assert status == 200
        for path in schema["paths"].values():  # the app's own id: another app's would only test the 403
            for operation in path.values():
                for parameter in operation.get("parameters", []):
                    if parameter["name"] == "app_id":
                        parameter["schema"] = {"type": "string", "enum": ["shop"]}
        (work / "openapi.json").write_text(json.dumps(schema))
        report = work / "report.json"
        run = subprocess.run(
            [str(Path(sys.executable).parent / "schemathesis"), "run", str(work / "openapi.json"),
             "--url", f"http://127.0.0.1:{server.port}", "-H", f"X-API-Key: {APP_KEY}",
             "--checks", "not_a_server_error,response_schema_conformance,content_type_conformance",
             "--max-examples", "200", "--seed", "7", "--workers", "2", "--no-shrink",
             "--phases", "examples,coverage,fuzzing", "--generation-database", "none",
             "--report", "ndjson", "--report-ndjson-path", str(report), "--no-color"],
            capture_output=True, text=True, timeout=900, cwd=work)  # its cache stays out of the repo
        summary = run.stdout[-4000:]
        requests = 0
        for line in report.read_text().splitlines():
            event = json.loads(line)
            for value in event.values():
                if isinstance(value, dict) and "recorder" in value:
                    requests += len(value["recorder"].get("interactions", {}))
        print(f"\nschemathesis: {requests} requests\n{summary}")
        log = server.log_path.read_text(errors="replace")  # a 5xx's traceback, to find its cause
        first = log.find("Traceback")
        assert run.returncode == 0, summary + (f"\nserver log:\n{log[first:first + 6000]}" if first >= 0 else "")
        assert requests >= MIN_REQUESTS, summary
    finally:
        server.stop()
