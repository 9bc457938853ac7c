"""`minirec train`: data folder → validated data → tuning → evaluation → models → bundle → gate → publish.

1. Tuning (unless off) searches the known-user model, repeat purchases and the first-visit blend on
   validation splits carved from the training side of the evaluation's splits (all data with
   `--no-eval`), so the report's test figures are never seen by the search. Validation is on time
   (train before a cut, judge what users did after it) wherever the data spans enough of it; the
   report says why when it fell back to random held-out pairs.
2. The evaluation protocols of the config run with the tuned settings.
3. The models are trained on all data with them and written as a bundle.
4. The publish gate compares the new configuration with popularity and with the published version on
   the same validation split; the bundle is published only if it passes (or with `force`).
"""

from __future__ import annotations

import os
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from offline_training import report as report_mod
from offline_training.datafolder import AppData, load_data_folder
from offline_training import evaluate as evaluation
from offline_training.fit import fit_models, known_family, positive_mask
from offline_training.gate import GateResult, check_gate
from offline_training.splits import NoTimeToSplit, make_split
from offline_training.tuning import TuningOutcome, tuning_budget
from offline_training.validation import TuningSkipped, carve_validation
from recsys import bundle
from recsys.config import TrainConfig, load_config
from recsys.known import PopularityRecommender
from search.item_index import save_search_index


@dataclass
class TrainResult:
    version: str
    path: Path
    published: bool
    reports: list[dict[str, Any]]
    seconds: float
    peak_rss_mb: float
    gate: GateResult | None = None
    tuning: TuningOutcome = field(default_factory=TuningOutcome)
    config: TrainConfig | None = None


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _log(message: str, quiet: bool) -> None:
    if not quiet:
        print(message, file=sys.stderr, flush=True)


def _training_side(data: AppData, cfg: TrainConfig, protocol: str, evaluating: bool):
    """The rows tuning may learn from: the training side of the evaluation's split of `protocol`
    (same seed and cut, so the report's test pairs stay unseen), or all data when nothing is evaluated."""
    if not evaluating:
        return data.interactions
    positive = positive_mask(data.interactions, cfg)
    cut = evaluation.evaluation_cut(data, cfg) if protocol == "temporal" else None
    return make_split(protocol, data.interactions, positive, cfg.evaluate.seed, cut=cut).train


def _protocols(data: AppData, cfg: TrainConfig, run_evaluation: bool) -> tuple[list[str], str | None]:
    """The evaluation protocols to run: temporal becomes stratified + cold-users where the data has too
    little time (and the reason is returned for the report)."""
    protocols = list(cfg.evaluate.protocols) if run_evaluation else []
    if "temporal" not in protocols:
        return protocols, None
    try:
        evaluation.evaluation_cut(data, cfg)
    except NoTimeToSplit as exc:
        swapped = [q for p in protocols for q in (("stratified", "cold-users") if p == "temporal" else (p,))]
        return list(dict.fromkeys(swapped)), f"evaluated on a random split, not on time: {exc}"
    return protocols, None


def train(data_dir: str | os.PathLike, artifacts: str | os.PathLike, app: str, *,
          config: TrainConfig | str | os.PathLike | None = None, platform_dir: str | os.PathLike | None = None,
          publish: bool = True, run_evaluation: bool = True, progress: bool = True,
          tuning: bool | None = None, force: bool = False) -> TrainResult:
    """Tune, evaluate, train every model on the data folder and write a bundle; publish it if the gate
    passes (or `force`), unless `publish` is False.

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
    protocols, no_time = _protocols(data, cfg, run_evaluation)
    if no_time:
        _log(no_time, quiet)
    do_tune = cfg.tuning.enabled if tuning is None else tuning
    outcome = TuningOutcome()
    warm_protocol = next((p for p in protocols if p in ("temporal", "stratified", "last-out")), "stratified")
    warm_frame = _training_side(data, cfg, warm_protocol, warm_protocol in protocols)
    validation_protocol, why = evaluation.choose_validation(
        warm_frame, cfg, fallback="last-out" if warm_protocol == "last-out" else "stratified")
    if do_tune:
        # one budget for both searches, a `cold_share` of it for first visits when there are profiles
        budget = tuning_budget(cfg, len(data.interactions))
        has_profiles = not (data.merchant_profiles.empty and data.platform_profiles.empty)
        cold_budget = budget * cfg.tuning.cold_share if has_profiles else 0.0
        _log(f"tuning the known-user model on {validation_protocol} validation ({budget - cold_budget:.0f} s) …", quiet)
        cfg, outcome = evaluation.tune(data, warm_frame, cfg, cold=False, validation_protocol=validation_protocol,
                                       budget_seconds=budget - cold_budget, progress=progress)
        # on time, first visits are the users who arrive after tuning's cut in the same rows
        cold_frame = warm_frame if validation_protocol == "temporal" else \
            _training_side(data, cfg, "cold-users", "cold-users" in protocols)
        if has_profiles:
            _log(f"tuning first visits ({cold_budget:.0f} s) …", quiet)
        cfg, cold_outcome = evaluation.tune(data, cold_frame, cfg, warm=False, validation_protocol=validation_protocol,
                                            budget_seconds=cold_budget, progress=progress)
        outcome.cold, outcome.skipped = cold_outcome.cold, outcome.skipped + cold_outcome.skipped
    outcome.skipped = [s for s in (no_time, why if do_tune else None) if s] + outcome.skipped
    for reason in outcome.skipped:
        _log(f"tuning: {reason}", quiet)
    if cfg.model.family == "auto":  # not tuned: the manifest records what was trained
        cfg = cfg.copy()
        cfg.model.family = known_family(cfg)
    reports: list[dict[str, Any]] = []
    for protocol in protocols:
        _log(f"evaluating ({protocol}) …", quiet)
        try:
            reports.append(evaluation.run_evaluation(data, cfg, protocol, cfg.evaluate.k, cfg.evaluate.seed,
                                                     progress=progress, tuning=False).report)
        except ValueError as exc:  # e.g. a protocol that finds nothing to test on this data
            reports.append({"protocol": protocol, "skipped": str(exc)})
    _log(f"training on all data ({known_family(cfg)}) …", quiet)
    models = fit_models(data, cfg, progress=progress)
    if isinstance(models.known, PopularityRecommender) and outcome.known is not None:
        models.known.reason = outcome.known.note
    if publish:
        val = outcome.validation
        if val is None:
            try:
                val = carve_validation(data.items, warm_frame, cfg, validation_protocol, second=True,
                                       profiles=data.merchant_profiles)
            except TuningSkipped as exc:
                _log(f"publish gate: {exc}", quiet)
        _log("publish gate …", quiet)
        gate = check_gate(val, cfg, artifacts, app, outcome.known, outcome.repeat)
    else:
        gate = None
    with bundle.BundleWriter(artifacts, app) as writer:
        models.save(writer)
        save_search_index(writer, models.catalog, data.queries, cfg.search)
        full_report = {"protocols": reports, "tuning": outcome.to_dict(),
                       "gate": gate.to_dict() if gate else None}
        writer.save_json("report", full_report)
        writer.save_bytes("report.md", report_mod.markdown(full_report, f"{app} {writer.version}").encode())
        writer.save_bytes("report.png", report_mod.chart(full_report))
        metrics = {r["protocol"]: {"model": r["model"], "popularity": r["popularity"], "n_users": r["n_users"]}
                   for r in reports if "skipped" not in r}
        seconds = time.perf_counter() - started
        path = writer.commit(
            data_fingerprint=data.fingerprint, config=cfg.to_dict(), metrics=metrics,
            extra={"training": {"seconds": round(seconds, 2), "peak_rss_mb": round(peak_rss_mb(), 1),
                                "n_users": len(models.users), "n_items": len(models.items),
                                "n_interactions": int(len(data.interactions))},
                   "gate": gate.to_dict() if gate else None},
        )
    published = False
    if publish and (force or gate is None or gate.passed):
        bundle.publish(artifacts, app, writer.version)
        published = True
    return TrainResult(writer.version, path, published, reports, seconds, peak_rss_mb(), gate, outcome, cfg)
