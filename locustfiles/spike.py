"""A campaign spike: base load, 30× that within a minute, a plateau, back to base, stop.

    locust -f locustfiles/spike.py --headless --host http://127.0.0.1:8000

With MINIREC_SPIKE_BASE visitors (default 10; each runs about one task per second):

    0-60 s     base            (MINIREC_SPIKE_BASE visitors)
    60-105 s   ramp to 30×     (linear, reaches the peak 45 s into the ramp)
    105-165 s  peak            (30 × base; MINIREC_SPIKE_FACTOR changes the 30)
    165-195 s  ramp back down
    195-255 s  base again, then the run stops (it never runs past 255 s)

Watch the failures and the p99 of each phase in locust's output (or `--csv PREFIX` with
`--csv-full-history` for a time series): the issue's traffic story is 300 → 5,000+ QPS in minutes.
"""

from __future__ import annotations

import os

from locust import LoadTestShape

from locustfiles.common import MallUser  # noqa: F401  (locust picks the user class up from here)

BASE = int(os.environ.get("MINIREC_SPIKE_BASE", "10"))
FACTOR = float(os.environ.get("MINIREC_SPIKE_FACTOR", "30"))
# (end of the stage in seconds, visitors at its end); the user count is interpolated inside ramps
STAGES = [(60.0, 1.0), (105.0, FACTOR), (165.0, FACTOR), (195.0, 1.0), (255.0, 1.0)]


def users_at(t: float, base: int = BASE) -> int | None:
    """Visitors the shape asks for at second `t` (None once the run is over)."""
    start, level = 0.0, 1.0
    for end, target in STAGES:
        if t < end:
            share = (t - start) / (end - start)
            return max(1, round(base * (level + (target - level) * share)))
        start, level = end, target
    return None


class SpikeShape(LoadTestShape):
    """Base → 30× base within a minute → base; bounded to 255 s."""

    def tick(self) -> tuple[int, float] | None:
        users = users_at(self.get_run_time())
        if users is None:
            return None
        # spawn fast enough to follow the ramp (the ramp adds (FACTOR - 1) × BASE users in 45 s)
        return users, max(BASE * FACTOR / 15.0, 1.0)
