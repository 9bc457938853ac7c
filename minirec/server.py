"""Run the API under uvicorn (several workers allowed: each loads the bundles and shares Redis)."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import uvicorn

from serving.metrics import MULTIPROC_ENV
from serving.server_config import load_server_config


def run_server(config: Path, host: str, port: int, workers: int = 1) -> int:
    """Serve until interrupted; returns the exit status."""
    os.environ["MINIREC_CONFIG"] = str(config.resolve())
    if workers > 1 and not os.environ.get(MULTIPROC_ENV):
        # one /metrics for all workers: each writes its values under the state folder (emptied first,
        # or counts of an earlier run would add up)
        folder = load_server_config(config).state_dir / "prometheus"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        os.environ[MULTIPROC_ENV] = str(folder)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run("serving.app:create_app", factory=True, host=host, port=port, workers=workers,
                log_level="info", access_log=False)
    return 0
