"""Soak: the base rate for a long time, to see memory and latency drift.

    MINIREC_LOAD_BASE_RPS=20 MINIREC_LOAD_DURATION_S=600 \
      locust -f locustfiles/soak.py --headless --host http://127.0.0.1:8000

Phases: warmup (10% of D, at most 60 s), then early (20% of the rest), middle (60%) and late (20%),
all at the base rate. `make load PROFILE=soak` also samples the server processes' RSS and compares
late with early p99 (docs/load.md). The run stops by itself at D (default 600 s).
"""

from __future__ import annotations

from locustfiles.common import MallUser, PlannedShape  # noqa: F401  (locust picks the user class up from here)


class SoakShape(PlannedShape):
    """The base rate for MINIREC_LOAD_DURATION_S (default 600 s)."""

    profile = "soak"
    default_duration = 600.0
