"""`minirec train`: data folder → validated data → evaluation → models → bundle → publish."""

from __future__ import annotations

import os
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from offline_training import report as report_mod
from offline_training.config import TrainConfig, load_config
from offline_training.datafolder import load_data_folder
from offline_training.evaluate import evaluate
from offline_training.fit import fit_models
from recsys import bundle
from search.item_index import save_search_index


@dataclass
class TrainResult:
    version: str
    path: Path
    published: bool
    reports: list[dict[str, Any]]
    seconds: float
    peak_rss_mb: float


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _log(message: str, quiet: bool) -> None:
    if not quiet:
        print(message, file=sys.stderr, flush=True)


def train(data_dir: str | os.PathLike, artifacts: str | os.PathLike, app: str, *,
          config: TrainConfig | str | os.PathLike | None = None, platform_dir: str | os.PathLike | None = None,
          publish: bool = True, run_evaluation: bool = True, progress: bool = True) -> TrainResult:
    """Train every model on the data folder and write a bundle; publish it unless told not to.

    Nothing is written until training and evaluation have succeeded, and the bundle appears
    atomically, so an interrupted run leaves neither a partial version nor a moved `current`.
    """
    started = time.perf_counter()
    bundle.check_app_name(app)
    cfg = config if isinstance(config, TrainConfig) else load_config(config)
    quiet = not progress
    _log(f"loading and validating {data_dir} …", quiet)
    data = load_data_folder(data_dir, platform_dir, cfg.scope_map())
    _log(f"{len(data.items)} items, {len(data.interactions)} interactions, "
         f"{data.interactions['user_id'].nunique()} users", quiet)
    reports: list[dict[str, Any]] = []
    if run_evaluation:
        for protocol in cfg.evaluate.protocols:
            _log(f"evaluating ({protocol}) …", quiet)
            try:
                reports.append(evaluate(data, cfg, protocol, cfg.evaluate.k, cfg.evaluate.seed, progress=progress))
            except ValueError as exc:  # e.g. a protocol that finds nothing to test on this data
                reports.append({"protocol": protocol, "skipped": str(exc)})
    _log("training on all data …", quiet)
    models = fit_models(data, cfg, progress=progress)
    with bundle.BundleWriter(artifacts, app) as writer:
        models.save(writer)
        save_search_index(writer, models.catalog, data.queries)
        writer.save_json("report", reports)
        writer.save_bytes("report.md", report_mod.markdown(reports, f"{app} {writer.version}").encode())
        writer.save_bytes("report.png", report_mod.bar_chart(reports))
        metrics = {r["protocol"]: {"model": r["model"], "popularity": r["popularity"], "n_users": r["n_users"]}
                   for r in reports if "skipped" not in r}
        seconds = time.perf_counter() - started
        path = writer.commit(
            data_fingerprint=data.fingerprint, config=cfg.to_dict(), metrics=metrics,
            extra={"training": {"seconds": round(seconds, 2), "peak_rss_mb": round(peak_rss_mb(), 1),
                                "n_users": len(models.users), "n_items": len(models.items),
                                "n_interactions": int(len(data.interactions))}},
        )
    if publish:
        bundle.publish(artifacts, app, writer.version)
    return TrainResult(writer.version, path, publish, reports, seconds, peak_rss_mb())
