"""The publish gate: a new bundle goes live only if it serves known users better than popularity
(a significant paired per-user gain, as tuning requires) and not worse than the published bundle,
both measured on the same validation split: tuning's second (finals) split, on which the new
configuration was not searched. A bundle that serves popularity to known users (because
nothing beat it) passes the first test: it serves popularity.

The published bundle is judged by its configuration: its family and settings (from its manifest)
are fitted on the same validation training side and scored on the same users. Scoring its stored
model directly would be unfair to the new one, since it was trained on data that may include
today's validation pairs.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from offline_training.fit import known_family
from offline_training.tuning import KnownTuning, config_params, score_config
from offline_training.tuning_repeat import RepeatTuning
from offline_training.validation import Z_ONE_SIDED_95, Comparison, Validation
from recsys import bundle
from recsys.config import TrainConfig, config_from_dict


@dataclass
class GateResult:
    passed: bool
    reasons: list[str] = field(default_factory=list)
    new: float | None = None
    popularity: float | None = None
    published: float | None = None
    published_version: str | None = None
    n_users: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def check_gate(val: Validation | None, cfg: TrainConfig, artifacts: str | os.PathLike, app: str,
               tuned: KnownTuning | None = None, repeat: RepeatTuning | None = None) -> GateResult:
    """Judge the config `cfg` trains against popularity and the published bundle on `val`; on a split
    in time also the home feed (repurchases mixed in) against "buy again" and best sellers (`repeat`,
    a `RepeatTuning`)."""
    if val is None:
        return GateResult(True, ["no validation split on this data: published without the gate"])
    family = known_family(cfg)
    if tuned is not None and tuned.family == family and tuned.per_user is not None:
        new_per_user = tuned.per_user
    else:
        new_per_user = score_config(val, cfg, family, config_params(cfg, family))
    # on a split in time the baseline is the trend-aware best sellers that serving would show
    versus = Comparison.of(new_per_user, val.popularity_per_user(cfg.popularity.half_life_days if val.cut else 0.0))
    new, popularity = versus.model, versus.popularity
    result = GateResult(True, new=new, popularity=popularity, n_users=len(val.rows))
    k = val.k
    if family != "popularity" and not versus.beats:
        result.passed = False
        result.reasons.append(f"{family} does not beat popularity on the validation split (NDCG@{k} {new:.4f} vs "
                              f"{popularity:.4f}; per-user gain {versus.gain:+.4f} ± {versus.stderr:.4f} is not "
                              f"significant)")
    for name, versus_baseline in (repeat.versus.items() if repeat is not None else ()):
        if name == "model alone":
            continue
        lost = Comparison(**versus_baseline)
        if lost.gain + Z_ONE_SIDED_95 * lost.stderr < 0:  # significantly worse on the merchant's future
            result.passed = False
            result.reasons.append(f"the home feed loses to {name} on the future (all items bought after the "
                                  f"validation cut): NDCG@{k} {lost.model:.4f} vs {lost.popularity:.4f}")
    current = bundle.current_version(artifacts, app)
    if current is not None:
        try:
            manifest = bundle.verify(bundle.app_dir(artifacts, app) / current).manifest
            old_cfg = config_from_dict(manifest["config"])
        except (bundle.BundleError, OSError, ValueError, KeyError) as exc:
            result.reasons.append(f"the published version {current} could not be read ({exc}); not compared")
            return result
        old_family = known_family(old_cfg)
        old = float(np.mean(score_config(val, old_cfg, old_family, config_params(old_cfg, old_family))))
        result.published, result.published_version = old, current
        tolerance = cfg.tuning.publish_tolerance
        if new < old * (1 - tolerance):
            result.passed = False
            result.reasons.append(f"worse than the published version {current} ({old_family}) on the same validation "
                                  f"split: NDCG@{k} {new:.4f} vs {old:.4f} (tolerance {tolerance:.0%})")
    return result
