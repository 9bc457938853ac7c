"""A day's traffic compressed into the run: quiet night, breakfast, lunch and dinner peaks.

    MINIREC_LOAD_BASE_RPS=20 MINIREC_LOAD_DURATION_S=240 \
      locust -f locustfiles/steady.py --headless --host http://127.0.0.1:8000

The base rate is the daytime level; the night runs at 0.3-0.4× and the meal peaks reach 1.6×
(breakfast), 2.2× (lunch) and 2.5× (dinner) (locustfiles/shapes.py, `DAY_KEYPOINTS`). Phases:
warmup, night, breakfast, morning, lunch, afternoon, dinner, evening; each hour of the day takes
D / 24 seconds. The run stops by itself at D (default 240 s).
"""

from __future__ import annotations

from locustfiles.common import MallUser, PlannedShape  # noqa: F401  (locust picks the user class up from here)


class SteadyShape(PlannedShape):
    """One compressed day; bounded to MINIREC_LOAD_DURATION_S (default 240 s)."""

    profile = "steady"
    default_duration = 240.0
