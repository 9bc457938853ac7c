"""Run the API under uvicorn (several workers allowed: each loads the bundles and shares Redis)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import uvicorn


def run_server(config: Path, host: str, port: int, workers: int = 1) -> int:
    """Serve until interrupted; returns the exit status."""
    os.environ["MINIREC_CONFIG"] = str(config.resolve())
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run("serving.app:create_app", factory=True, host=host, port=port, workers=workers,
                log_level="info", access_log=False)
    return 0
