"""A campaign spike: steady base, 30× that within 30 s, held, then straight back to base.

    MINIREC_LOAD_BASE_RPS=20 MINIREC_LOAD_DURATION_S=300 \
      locust -f locustfiles/spike.py --headless --host http://127.0.0.1:8000

Phases (locustfiles/shapes.py, `spike_plan`), for a run of D seconds: warmup (10% of D, 3-60 s),
steady (35% of the rest), ramp (to 30× in min(30 s, 10% of D)), spike (30% of the rest at 30×),
recovery (base again: 15% of the rest, at most 30 s), after (the remainder at base). The run stops
by itself at D. MINIREC_SPIKE_FACTOR changes the 30; MINIREC_SPIKE_RAMP_S shortens the ramp.
`make load PROFILE=spike` runs it against a server it starts and reports per phase (docs/load.md).
"""

from __future__ import annotations

from locustfiles.common import MallUser, PlannedShape  # noqa: F401  (locust picks the user class up from here)


class SpikeShape(PlannedShape):
    """Base → 30× base within 30 s → held → base; bounded to MINIREC_LOAD_DURATION_S (default 300 s)."""

    profile = "spike"
    default_duration = 300.0
