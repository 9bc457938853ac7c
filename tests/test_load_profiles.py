"""Load profiles: the shapes' plans (users and phase at t), the report's arithmetic, and one short
real spike run through bench/load_run.py (server + locust headless + summary + plot).

The shape tests import locustfiles.shapes only: importing locust itself monkey-patches the
standard library with gevent, which must not happen inside the pytest process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.load_run import Requests, memory_summary, recovery_seconds, run_load
from locustfiles.shapes import MAX_RAMP_S, plan_for, soak_plan, spike_plan, steady_plan

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------ shapes
@pytest.mark.parametrize("duration", [24.0, 60.0, 300.0, 600.0, 3600.0])
@pytest.mark.parametrize("profile", ["steady", "spike", "soak"])
def test_every_plan_fills_exactly_its_duration(profile: str, duration: float) -> None:
    plan = plan_for(profile, duration)
    assert plan.duration == pytest.approx(duration)
    assert plan.stages[0].start == 0.0
    assert all(a.end == pytest.approx(b.start) for a, b in zip(plan.stages, plan.stages[1:]))
    assert plan.phase_at(0.0) == "warmup"
    assert plan.users_at(duration - 0.01, 10) is not None
    assert plan.users_at(duration, 10) is None and plan.users_at(duration + 5, 10) is None
    assert plan.users_at(-1, 10) is None


@pytest.mark.parametrize("duration", [60.0, 300.0, 600.0, 3600.0])
def test_spike_reaches_30x_within_30_s_and_comes_back(duration: float) -> None:
    plan = spike_plan(duration)
    phases = plan.phases()
    assert list(phases) == ["warmup", "steady", "ramp", "spike", "recovery", "after"]
    ramp_start, ramp_end = phases["ramp"]
    assert 0 < ramp_end - ramp_start <= MAX_RAMP_S
    base = 20
    assert plan.users_at(phases["steady"][0] + 1, base) == base
    assert plan.users_at(ramp_start + 0.5 * (ramp_end - ramp_start), base) == pytest.approx(15.5 * base, abs=1)
    spike_start, spike_end = phases["spike"]
    assert spike_start == pytest.approx(ramp_end)
    for t in np.linspace(spike_start, spike_end - 1e-6, 7):
        assert plan.users_at(t, base) == 30 * base
        assert plan.phase_at(t) == "spike"
    assert plan.users_at(spike_end, base) == base  # straight back
    assert plan.phase_at(spike_end) == "recovery"
    assert plan.phases()["recovery"][1] - spike_end <= MAX_RAMP_S
    assert phases["spike"][1] - phases["spike"][0] >= 0.25 * (duration - ramp_end + ramp_start) - 1


def test_spike_factor_and_ramp_options() -> None:
    plan = spike_plan(600, factor=10, ramp_s=5)
    ramp = plan.phases()["ramp"]
    assert ramp[1] - ramp[0] == pytest.approx(5)
    assert plan.peak() == 10
    assert spike_plan(600, ramp_s=300).phases()["ramp"][1] - spike_plan(600, ramp_s=300).phases()["ramp"][0] == 30


def test_steady_is_a_day_with_three_meal_peaks() -> None:
    plan = steady_plan(240.0)  # 10 s per hour of the day
    assert [p for p in plan.phases()] == ["warmup", "night", "breakfast", "morning", "lunch", "afternoon", "dinner",
                                         "evening"]
    per_phase_peak = {}
    for t in np.arange(0, 240, 0.5):
        name = plan.phase_at(t)
        per_phase_peak[name] = max(per_phase_peak.get(name, 0.0), plan.multiplier_at(t))
    assert per_phase_peak["breakfast"] == pytest.approx(1.6, abs=0.05)
    assert per_phase_peak["lunch"] == pytest.approx(2.2, abs=0.05)
    assert per_phase_peak["dinner"] == pytest.approx(2.5, abs=0.05)
    assert per_phase_peak["night"] < 0.6 and per_phase_peak["afternoon"] < 1.6
    # the peaks are at 8:00, 12:00 and 19:00 of the compressed day
    assert plan.multiplier_at(80) == pytest.approx(1.6) and plan.multiplier_at(120) == pytest.approx(2.2)
    assert plan.multiplier_at(190) == pytest.approx(2.5)


def test_soak_is_flat_with_early_and_late_windows() -> None:
    plan = soak_plan(600)
    assert {plan.multiplier_at(t) for t in range(0, 600, 7)} == {1.0}
    phases = plan.phases()
    assert phases["warmup"] == (0.0, 60.0)
    assert phases["early"][1] - phases["early"][0] == pytest.approx(phases["late"][1] - phases["late"][0])


def test_bad_plans_are_refused() -> None:
    with pytest.raises(ValueError):
        plan_for("weekend", 300)
    with pytest.raises(ValueError):
        spike_plan(10)
    with pytest.raises(ValueError):
        steady_plan(float("nan"))


def test_locustfiles_build_their_shapes_from_the_environment() -> None:
    """In a subprocess (locust patches the standard library): each locustfile exposes one shape (its
    own profile's) and the MallUser, and the shape reads rate and duration from the environment."""
    code = ("import json\n"
            "from locust.util.load_locustfile import load_locustfile\n"
            "out = {}\n"
            "for name in ('steady', 'spike', 'soak'):\n"
            "    users, shapes = load_locustfile(f'locustfiles/{name}.py')\n"
            "    assert list(users) == ['MallUser'] and len(shapes) == 1, (users, shapes)\n"
            "    shape = shapes[0]\n"
            "    plan = shape.plan\n"
            "    out[shape.profile] = [plan.duration, shape.base_users, shape.spawn_rate, list(plan.phases())]\n"
            "print(json.dumps(out))\n")
    env = {"MINIREC_LOAD_DURATION_S": "120", "MINIREC_LOAD_BASE_RPS": "8", "MINIREC_TASKS_PER_USER_S": "2",
           "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    shapes = json.loads(done.stdout.strip().splitlines()[-1])
    assert shapes["spike"][:3] == [120.0, 4.0, 120.0]  # 8 req/s at 2 tasks per visitor; spawn 30× base in 1 s
    assert shapes["steady"][0] == shapes["soak"][0] == 120.0
    assert shapes["soak"][3] == ["warmup", "early", "middle", "late"]


# ------------------------------------------------------------------------------------ report arithmetic
def _requests(t: np.ndarray, ms: np.ndarray) -> Requests:
    n = len(t)
    return Requests(t=t, ms=ms, ok=np.ones(n, bool), status=np.full(n, 200), degraded=np.zeros(n, int),
                    name=np.array(["home"] * n, dtype=object))


def test_recovery_seconds_is_the_first_second_latency_stays_back() -> None:
    t = np.arange(0, 60, 0.01)  # 100 requests/s; the spike phase ends at 30 s
    slow = (t >= 20) & (t < 33)  # still slow 3 s after the spike
    r = _requests(t, np.where(slow, 200.0, 10.0))
    assert recovery_seconds(r, 30.0, 60.0, reference_p99=10.0) == 3.0
    assert recovery_seconds(_requests(t, np.full(len(t), 10.0)), 30.0, 60.0, reference_p99=10.0) == 0.0
    assert recovery_seconds(_requests(t, np.where(t >= 20, 200.0, 10.0)), 30.0, 60.0, reference_p99=10.0) is None
    # one slow blip 8 s later is inside the hold (5 more one-second steps of 5 s windows): not yet back
    blip = slow | ((t >= 40) & (t < 40.3))
    assert recovery_seconds(_requests(t, np.where(blip, 200.0, 10.0)), 30.0, 60.0, reference_p99=10.0) == 11.0


def test_memory_growth_is_measured_after_the_warmup() -> None:
    samples = [{"t": 1000.0 + s, "server_rss_mb": 500.0 + (s if s < 10 else 10) + (0.05 * s if s > 10 else 0),
                "redis_rss_mb": 5.0} for s in range(100)]
    memory = memory_summary(samples, t0=1000.0, warm_end=10.0, run_end=100.0)
    # medians of the 10 s after the warm-up (s = 10 … 20) and of the last 10 s (s = 90 … 99)
    assert memory["rss_mb_warmup_end"] == pytest.approx(510 + 0.05 * 15, abs=0.1)
    assert memory["rss_mb_end"] == pytest.approx(510 + 0.05 * 94.5, abs=0.1)
    assert memory["growth"] == pytest.approx((510 + 0.05 * 94.5) / (510 + 0.05 * 15) - 1, abs=1e-3)
    assert memory["redis_growth"] == 0.0


# ------------------------------------------------------------------------------------ a real run
@pytest.mark.slow
def test_short_spike_run_writes_a_clean_report(tmp_path: Path) -> None:
    out = tmp_path / "spike"
    summary = run_load("spike", duration=24, rate=4, workers=1, out=out, workdir=tmp_path / "work",
                       users=300, items=200, events=8000)
    written = json.loads((out / "summary.json").read_text())
    assert written == json.loads(json.dumps(summary))
    assert {"requests", "failures", "rps", "p50_ms", "p99_ms", "phases", "recovery_s", "memory"} <= set(written)
    assert list(written["phases"]) == ["warmup", "steady", "ramp", "spike", "recovery", "after"]
    for phase in written["phases"].values():
        assert {"p50_ms", "p99_ms", "failures", "requests", "rps"} <= set(phase)
    assert written["failures"] == 0, written["by_name"]
    assert written["requests"] == written["locust"]["requests"] > 200
    # the shape was followed: the spike (30× the base rate) sent far more than the steady phase; the
    # margin leaves room for a busy machine where locust's visitors wait longer for their answers
    assert written["phases"]["spike"]["rps"] > 3 * written["phases"]["steady"]["rps"]
    assert written["recovery_s"] is None or written["recovery_s"] >= 0
    # the mix reached every route, and bad requests got their documented answers (counted as successes)
    names = set(written["by_name"])
    assert {"home [known]", "home [cold]", "home [unknown]", "related", "exclusive", "events", "hot", "shading",
            "discover"} <= names
    assert any(n.startswith("search [") for n in names) and any(n.startswith("suggest [") for n in names)
    bad = written["bad_requests"]
    assert bad["requests"] > 0 and bad["as_documented"] == bad["requests"]
    assert set(bad["statuses"]) <= {"200", "401", "403", "422"}
    assert {"rss_mb_warmup_end", "rss_mb_end", "growth"} <= set(written["memory"])
    assert (out / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for name in ("requests.csv", "timeline.csv", "memory.csv", "locust_stats.csv", "locust_stats_history.csv"):
        assert (out / name).stat().st_size > 0, name
