"""Load shapes as plans of named stages: the load multiplier and the phase at any second.

A plan is a list of stages, each with a name (the phase it belongs to), a start and an end (seconds
from the start of the run) and the load multiplier at both ends (linear in between). The load is
`base requests/s × multiplier`; the locust shapes turn it into a visitor count (each visitor runs a
fixed number of tasks per second, see common.py), and `bench/load_run.py` reports latency per phase.

Plans scale to the run's duration, except the spike's ramp, which takes at most 30 s whatever the
duration (a campaign push reaches everyone at once):

- `steady`: a day compressed into the run: night, breakfast, morning, lunch, afternoon, dinner and
  evening, with peaks at breakfast (1.6×), lunch (2.2×) and dinner (2.5×) over a daytime level of 1×;
- `spike`: steady base, a ramp to 30× within 30 s, held, then straight back to base (recovery, then
  after);
- `soak`: the base for the whole run (early, middle and late windows, to compare).

Every plan starts with a `warmup` phase (at its first stage's level) that reports leave out of the
reference numbers: connections open, caches fill, the JIT-less interpreter settles.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The spike's ramp never takes longer than this, whatever the duration.
MAX_RAMP_S = 30.0
SPIKE_FACTOR = 30.0
PROFILES = ("steady", "spike", "soak")
#: The day of the `steady` profile: (hour, multiplier) keypoints, linear in between, and the phase
#: each hour range belongs to. Daytime is 1×; the peaks are meal times.
DAY_KEYPOINTS = [(0, 0.4), (5, 0.3), (7, 0.8), (8, 1.6), (9.5, 1.0), (11, 1.1), (12, 2.2), (13.5, 1.2),
                 (17, 1.1), (19, 2.5), (20.5, 1.6), (22, 0.9), (24, 0.5)]
DAY_PHASES = [(6, "night"), (10, "breakfast"), (11, "morning"), (14, "lunch"), (17, "afternoon"),
              (21, "dinner"), (24, "evening")]


@dataclass(frozen=True)
class Stage:
    """Seconds [start, end) of phase `name`, the multiplier going linearly from `begin` to `finish`."""

    name: str
    start: float
    end: float
    begin: float
    finish: float

    def multiplier(self, t: float) -> float:
        share = (t - self.start) / (self.end - self.start) if self.end > self.start else 1.0
        return self.begin + (self.finish - self.begin) * min(max(share, 0.0), 1.0)


@dataclass(frozen=True)
class Plan:
    """The stages of one run, back to back from 0 to `duration`."""

    profile: str
    stages: tuple[Stage, ...]

    @property
    def duration(self) -> float:
        return self.stages[-1].end

    def stage_at(self, t: float) -> Stage | None:
        """The stage running at second `t` (None before 0 and once the run is over)."""
        if t < 0:
            return None
        for stage in self.stages:
            if t < stage.end:
                return stage
        return None

    def multiplier_at(self, t: float) -> float | None:
        stage = self.stage_at(t)
        return None if stage is None else stage.multiplier(t)

    def phase_at(self, t: float) -> str | None:
        stage = self.stage_at(t)
        return None if stage is None else stage.name

    def users_at(self, t: float, base_users: float) -> int | None:
        """Visitors at second `t` for `base_users` at multiplier 1 (at least 1; None when over)."""
        multiplier = self.multiplier_at(t)
        return None if multiplier is None else max(1, round(base_users * multiplier))

    def phases(self) -> dict[str, tuple[float, float]]:
        """Phase → (first start, last end); a phase may span several stages (the day's ramps)."""
        out: dict[str, tuple[float, float]] = {}
        for s in self.stages:
            start, _ = out.get(s.name, (s.start, s.end))
            out[s.name] = (start, s.end)
        return out

    def peak(self) -> float:
        return max(max(s.begin, s.finish) for s in self.stages)

    def describe(self) -> list[dict[str, float | str]]:
        """JSON-friendly stages (for phases.json and the docs)."""
        return [{"phase": s.name, "start_s": round(s.start, 3), "end_s": round(s.end, 3),
                 "multiplier_from": s.begin, "multiplier_to": s.finish} for s in self.stages]


def warmup_seconds(duration: float) -> float:
    """The warm-up at the start of every plan: 10% of the run, between 3 and 60 s."""
    return min(60.0, max(3.0, 0.1 * duration))


def _check(duration: float, minimum: float) -> None:
    if not duration >= minimum:
        raise ValueError(f"a run of {duration} s is too short for this profile (at least {minimum:g} s)")


def spike_plan(duration: float, factor: float = SPIKE_FACTOR, ramp_s: float = MAX_RAMP_S) -> Plan:
    """warmup → steady → ramp (to `factor`× in min(ramp_s, 30 s, 10% of the run)) → spike → recovery → after.

    The drop back to base is immediate (the campaign ends); `recovery` is the first stretch at base
    after it (15% of the rest, at most 30 s), where the report looks for the return to steady latency.
    """
    _check(duration, 20.0)
    warm = warmup_seconds(duration)
    ramp = min(ramp_s, MAX_RAMP_S, 0.1 * duration)
    rest = duration - warm - ramp
    steady, spike = 0.35 * rest, 0.3 * rest
    recovery = min(MAX_RAMP_S, 0.15 * rest)
    after = rest - steady - spike - recovery
    return _chain("spike", [("warmup", warm, 1.0, 1.0), ("steady", steady, 1.0, 1.0), ("ramp", ramp, 1.0, factor),
                            ("spike", spike, factor, factor), ("recovery", recovery, 1.0, 1.0),
                            ("after", after, 1.0, 1.0)], duration)


def soak_plan(duration: float) -> Plan:
    """warmup → early → middle → late at the base level; early and late are 20% of the rest each."""
    _check(duration, 20.0)
    warm = warmup_seconds(duration)
    rest = duration - warm
    return _chain("soak", [("warmup", warm, 1.0, 1.0), ("early", 0.2 * rest, 1.0, 1.0),
                           ("middle", 0.6 * rest, 1.0, 1.0), ("late", 0.2 * rest, 1.0, 1.0)], duration)


def _day_multiplier(hour: float) -> float:
    for (h0, m0), (h1, m1) in zip(DAY_KEYPOINTS, DAY_KEYPOINTS[1:]):
        if hour <= h1:
            return m0 + (m1 - m0) * (hour - h0) / (h1 - h0)
    return DAY_KEYPOINTS[-1][1]


def steady_plan(duration: float) -> Plan:
    """A day in `duration` seconds: stages between the keypoints and phase borders, warm-up first."""
    _check(duration, 24.0)
    hours = sorted({h for h, _ in DAY_KEYPOINTS} | {h for h, _ in DAY_PHASES} | {0.0})
    per_hour = duration / 24.0
    warm = warmup_seconds(duration)
    stages: list[Stage] = []
    for h0, h1 in zip(hours, hours[1:]):
        name = next(phase for end, phase in DAY_PHASES if h0 < end)
        start, end = h0 * per_hour, (duration if h1 == 24 else h1 * per_hour)
        if end <= warm:
            name = "warmup"
        elif start < warm:  # split the stage at the end of the warm-up
            mid = _day_multiplier(warm / per_hour)
            stages.append(Stage("warmup", start, warm, _day_multiplier(h0), mid))
            stages.append(Stage(name, warm, end, mid, _day_multiplier(h1)))
            continue
        stages.append(Stage(name, start, end, _day_multiplier(h0), _day_multiplier(h1)))
    return Plan("steady", tuple(stages))


def _chain(profile: str, parts: list[tuple[str, float, float, float]], duration: float) -> Plan:
    """Stages back to back; the last one ends at exactly `duration` (no rounding residue)."""
    stages, t = [], 0.0
    for name, seconds, begin, finish in parts:
        if seconds > 0:
            stages.append(Stage(name, t, t + seconds, begin, finish))
            t += seconds
    last = stages[-1]
    stages[-1] = Stage(last.name, last.start, duration, last.begin, last.finish)
    return Plan(profile, tuple(stages))


def plan_for(profile: str, duration: float, *, factor: float = SPIKE_FACTOR, ramp_s: float = MAX_RAMP_S) -> Plan:
    """The plan of `profile` (steady, spike or soak) for a run of `duration` seconds."""
    if profile == "steady":
        return steady_plan(duration)
    if profile == "spike":
        return spike_plan(duration, factor, ramp_s)
    if profile == "soak":
        return soak_plan(duration)
    raise ValueError(f"unknown profile {profile!r} (one of {', '.join(PROFILES)})")


#: The phase the other phases are compared with, per profile (its p99 is the reference).
REFERENCE_PHASE = {"steady": "afternoon", "spike": "steady", "soak": "early"}
