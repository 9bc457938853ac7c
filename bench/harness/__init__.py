"""One harness for the benches (`bench/*`) and the tests that drive a real server.

- `client`: HTTP to a local server: one-shot JSON requests and a raw keep-alive asyncio connection.
- `server`: `minirec serve` in a subprocess of its own session: start, wait for /readyz, stop, CPU.
- `load`: load phases of pre-encoded requests (closed loop at saturation, open loop at a rate).
- `mix`: a threaded traffic mix that records every answer (the fault tests).
- `mall`: the bench mall (generated, trained, cached in a work folder) and its server config.
- `traffic`: the bench mall's requests (home, related, suggest, search, events) and query forms.

This module stays import-light: locust processes import `mall` and `traffic` from here.
"""

from __future__ import annotations

import sys
from pathlib import Path

#: The repository (the server subprocesses run its code).
ROOT = Path(__file__).resolve().parents[2]


def progress(message: str) -> None:
    """A progress line on stderr (stdout is for results)."""
    print(message, file=sys.stderr, flush=True)
