"""`minirec bench audiences`: lookalike precision@N on the synthetic platform vs two baselines.

For each focused mall (beauty, baby, digital, pets) the seed is the mall's buyers (its best
customers, at most `seed_size`); the audience is the top-N of the platform users who granted
`marketing` and are not users of that mall yet. Precision@N is the share of the audience whose true
main interests (ground truth of the generator) include the mall's first category. The baselines are
drawn from the same pool in the same run: N at random, and the N most active platform users.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from analytics.lookalike import build_audience, build_platform_users, eligible_rows, most_active
from offline_training.synth_platform import MALLS, generate_platform
from recsys.config import TrainConfig

#: Malls benchmarked, and the category their audience should be interested in.
TARGETS = {"beauty": "美妆", "baby": "母婴", "digital": "数码", "pets": "宠物"}


def run(users: int = 20_000, size: int = 1000, seed_size: int = 300, seed: int = 0) -> dict[str, Any]:
    """Generate a platform, build one audience per target mall, and score it and the baselines."""
    started = time.perf_counter()
    platform = generate_platform(users, seed=seed)
    view = build_platform_users(platform.profiles, platform.events, TrainConfig().scope_map())
    rows: list[dict[str, Any]] = []
    rng = np.random.default_rng(seed)
    for app, category in TARGETS.items():
        assert category in MALLS[app]
        truth = platform.interested(category)
        ev = platform.events
        buyers = ev[(ev["app_id"] == app) & (ev["type"] == "purchase")]["user_id"].value_counts()
        seed_ids = list(buyers.index[:seed_size])
        built = time.perf_counter()
        audience = build_audience(view, app, seed_ids, size, key=f"bench-{app}-{seed}")
        seconds = time.perf_counter() - built
        pool = eligible_rows(view, app, seed_ids)
        n = len(audience.members)

        def precision(ids: list[str]) -> float:
            return sum(i in truth for i in ids) / max(len(ids), 1)

        random_ids = [view.ids.ids[i] for i in rng.choice(pool, n, replace=False)]
        active_ids = [view.ids.ids[i] for i in most_active(view, pool, n)]
        rows.append({"app": app, "category": category, "seed": len(seed_ids), "pool": int(len(pool)), "n": n,
                     "precision_lookalike": round(precision(audience.members), 3),
                     "precision_random": round(precision(random_ids), 3),
                     "precision_most_active": round(precision(active_ids), 3),
                     "base_rate": round(sum(view.ids.ids[i] in truth for i in pool) / len(pool), 3),
                     "expected_conversion_lift": audience.lift["expected_conversion_lift"],
                     "lift_ci95": audience.lift["ci95"], "seconds": round(seconds, 2)})
    return {"users": users, "size": size, "seed_size": seed_size, "seed": seed, "results": rows,
            "seconds": round(time.perf_counter() - started, 1)}


def render(doc: dict[str, Any]) -> str:
    """The results as a Markdown table."""
    lines = [f"{doc['users']} platform users, N = {doc['size']}, seed ≤ {doc['seed_size']} buyers, seed {doc['seed']}",
             "", "| mall | category | seed | pool | precision@N lookalike | random | most active | held-out lift "
                 "[95%] | build s |", "|---|---|---|---|---|---|---|---|---|"]
    for r in doc["results"]:
        lines.append(f"| {r['app']} | {r['category']} | {r['seed']} | {r['pool']} | {r['precision_lookalike']:.3f} | "
                     f"{r['precision_random']:.3f} | {r['precision_most_active']:.3f} | "
                     f"{r['expected_conversion_lift']:.2f} [{r['lift_ci95'][0]:.2f}, {r['lift_ci95'][1]:.2f}] | "
                     f"{r['seconds']:.2f} |")
    return "\n".join(lines)


def add_arguments(parser: Any) -> None:
    """Options of `minirec bench audiences`."""
    parser.add_argument("--users", type=int, default=20_000, help="platform users to generate (default 20000)")
    parser.add_argument("--size", type=int, default=1000, help="audience size N (default 1000)")
    parser.add_argument("--seed-size", type=int, default=300, help="seed: at most this many buyers of the mall (default 300)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the platform (default 0)")
    parser.add_argument("--json", help="also write the results to this JSON file")


def run_from_args(args: Any) -> int:
    """Run the bench, print the table, optionally write JSON."""
    import json

    doc = run(args.users, args.size, args.seed_size, args.seed)
    print(render(doc))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, ensure_ascii=False, indent=2)
    return 0
