"""Steady load: a constant number of visitors for a bounded time.

    locust -f locustfiles/steady.py --headless --host http://127.0.0.1:8000

MINIREC_STEADY_USERS visitors (default 20; each runs about one task per second, so about that many
requests/s), spawned over the first 10 s and kept for MINIREC_STEADY_SECONDS (default 120), then
the run stops by itself.
"""

from __future__ import annotations

import os

from locust import LoadTestShape

from locustfiles.common import MallUser  # noqa: F401  (locust picks the user class up from here)

USERS = int(os.environ.get("MINIREC_STEADY_USERS", "20"))
SECONDS = float(os.environ.get("MINIREC_STEADY_SECONDS", "120"))


class SteadyShape(LoadTestShape):
    """USERS visitors for SECONDS, then stop."""

    def tick(self) -> tuple[int, float] | None:
        if self.get_run_time() >= SECONDS:
            return None
        return USERS, max(USERS / 10.0, 1.0)
