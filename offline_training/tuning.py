"""Choose the known-user model and its settings on the app's own data (Optuna TPE, seeded, pruned).

The search runs on a validation split of the training data (`offline_training/validation.py`) within
a time budget. It starts from the config's own values of every candidate family (so the defaults
are always tried), then lets TPE explore:

- `als`: factors, regularization, alpha, confidence weighting (none / BM25 / TF-IDF);
- `ease`: λ and the weights kept per item (only if the dense solve fits `ease.max_memory_mb`);
- `rp3beta`: α, β and the weights kept per item;
- `itemknn`: similarity (cosine / BM25 / TF-IDF) and neighbourhood size;
- for the families that read confidences (ALS, item kNN): an event-decay half-life as a fraction of
  the data's time span (or none), and, on rating data, the rating value as confidence.

A value set in the config file is pinned: it is used as written and not searched. Each family has
its own study and the families share the budget evenly (the next trial goes to the family that has
used the least time) until those far behind the leader are dropped. ALS trials report their
validation NDCG between sweeps so that a percentile pruner stops those in the bottom quarter early,
and any trial still running at the deadline is stopped. The popularity half-life is chosen on the same split.
Each family's best is then refitted on a second validation split (other held-out pairs of the same
training side): the winner has the best mean NDCG over both splits, and is compared with popularity
on the second split (paired, per-user NDCG): unless its gain there is significant (one-sided 95%,
Bonferroni-corrected for the number of finalists it was picked from),
the bundle serves popularity to known users.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from offline_training.validation import Comparison, Validation
from recsys.als import weight_confidences
from recsys.config import ALSConfig, TrainConfig
from recsys.item_models import ease_fits
from recsys.known import FAMILIES, fit_known
from recsys.recommender import Recommender

#: Fractions of the data's time span tried as the popularity half-life (0 = no decay).
POPULARITY_HALF_LIFE_FRACTIONS = (0.0, 0.01, 0.03, 0.1, 0.3, 1.0)
#: Families whose scores read the confidences (and so the event settings).
READS_CONFIDENCES = ("als", "itemknn")


@dataclass
class Trial:
    number: int
    family: str
    params: dict[str, Any]
    value: float | None  # validation NDCG@k; None if pruned or failed
    seconds: float
    state: str  # complete, pruned, fail

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class KnownTuning:
    """What the search found: the winner (or popularity), every trial, and the budget used."""

    family: str
    #: The winner's settings as config paths ("als.factors", "events.half_life_days", …).
    params: dict[str, Any]
    value: float
    popularity: float
    popularity_half_life_days: float
    trials: list[Trial]
    budget_seconds: float
    seconds: float
    n_users: int
    k: int
    note: str = ""
    #: Each family's best, scored again on the second split (`Finalist` as dicts).
    finalists: list[dict[str, Any]] = field(default_factory=list)
    #: The winner against popularity on the second split: mean per-user NDCG gain, its standard error.
    gain: float | None = None
    stderr: float | None = None
    #: Per-user validation NDCG of the winner (for the publish gate; not in the report).
    per_user: np.ndarray | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "per_user"}
        out["trials"] = [t.to_dict() for t in self.trials]
        return out


def tuning_budget(cfg: TrainConfig, n_interactions: int) -> float:
    """Seconds for the whole search: the base budget plus the per-million-interactions share."""
    t = cfg.tuning
    return t.budget_seconds + t.budget_seconds_per_million * n_interactions / 1e6


def candidate_families(cfg: TrainConfig, n_items: int) -> list[str]:
    """The families to search: the pinned one, or all that fit (EASE only within its memory limit)."""
    if "model.family" in cfg.pinned and cfg.model.family != "auto":
        return [cfg.model.family]
    return [f for f in FAMILIES if f != "ease" or ease_fits(n_items, cfg.ease.max_memory_mb)]


def _events(trial: Any, cfg: TrainConfig, val: Validation, family: str) -> dict[str, Any]:
    """Event settings of a trial (only for families that read confidences)."""
    params: dict[str, Any] = {}
    if "events.half_life_days" in cfg.pinned or val.span_days < 1:
        params["events.half_life_days"] = cfg.events.half_life_days
    elif trial.suggest_categorical(f"{family}.decay", [False, True]):
        fraction = trial.suggest_float(f"{family}.half_life_fraction", 0.01, 2.0, log=True)
        params["events.half_life_days"] = round(fraction * val.span_days, 3)
    else:
        params["events.half_life_days"] = 0.0
    if val.ratings_vary and "events.use_rating_value" not in cfg.pinned:
        params["events.use_rating_value"] = trial.suggest_categorical(f"{family}.rating_value", [False, True])
    else:
        params["events.use_rating_value"] = cfg.events.use_rating_value
    return params


def mean_weight(val: Validation, events: dict[str, Any], weighting: str) -> float:
    """Mean ALS weight w of the observed pairs (before 1 + alpha × w) under these settings."""
    conf = val.confidences(events.get("events.half_life_days"), events.get("events.use_rating_value"))
    weighted = weight_confidences(conf, ALSConfig(weighting=weighting, alpha=1.0))
    return float(np.mean(weighted.data) - 1.0) if weighted.nnz else 1.0


def _suggest(trial: Any, cfg: TrainConfig, val: Validation, family: str) -> dict[str, Any]:
    """The trial's settings of `family` as config paths; pinned paths keep the config's value.

    ALS regularization is searched relative to the confidence scale, λ = ρ (1 + alpha · mean w):
    good settings lie on a ridge where λ grows with alpha (ML-100k: λ 20 / 30 / 70 at alpha
    0.3 / 1 / 3, all NDCG@10 ≈ 0.48), which this makes flat in ρ."""
    n_items = len(val.items)
    max_k = max(2, min(1000, n_items - 1))
    space: dict[str, Any] = {
        "als.factors": lambda name: trial.suggest_int(name, 16, 256, log=True),
        "als.alpha": lambda name: trial.suggest_float(name, 0.05, 50.0, log=True),
        "als.weighting": lambda name: trial.suggest_categorical(name, ["none", "bm25", "tfidf"]),
        "ease.l2": lambda name: trial.suggest_float(name, 1.0, 1e5, log=True),
        "ease.neighbours": lambda name: trial.suggest_int(name, min(10, max_k), max_k, log=True),
        "rp3beta.alpha": lambda name: trial.suggest_float(name, 0.1, 2.0),
        "rp3beta.beta": lambda name: trial.suggest_float(name, 0.0, 1.0),
        "rp3beta.neighbours": lambda name: trial.suggest_int(name, min(10, max_k), max_k, log=True),
        "itemknn.similarity": lambda name: trial.suggest_categorical(name, ["cosine", "bm25", "tfidf"]),
        "itemknn.neighbours": lambda name: trial.suggest_int(name, min(10, max_k), max_k, log=True),
    }
    params = _events(trial, cfg, val, family) if family in READS_CONFIDENCES else {}
    for path, suggest in space.items():
        if path.startswith(family + "."):
            params[path] = cfg.get(path) if path in cfg.pinned else suggest(path)
    if family == "als":
        if "als.regularization" in cfg.pinned:
            params["als.regularization"] = cfg.als.regularization
        else:
            rho = trial.suggest_float("als.relative_regularization", 0.01, 100.0, log=True)
            scale = 1.0 + params["als.alpha"] * mean_weight(val, params, params["als.weighting"])
            params["als.regularization"] = round(rho * scale, 6)
    return params


def _starting_point(cfg: TrainConfig, family: str, val: Validation) -> dict[str, Any]:
    """Optuna parameters that reproduce the config's own values of `family` (enqueued first)."""
    start: dict[str, Any] = {"family": family}
    for f in dataclasses.fields(getattr(cfg, family)):
        start[f"{family}.{f.name}"] = getattr(getattr(cfg, family), f.name)
    max_k = max(2, min(1000, len(val.items) - 1))
    for key in ("ease.neighbours", "rp3beta.neighbours", "itemknn.neighbours"):
        if key in start:
            start[key] = min(int(start[key]), max_k)
    if family in READS_CONFIDENCES:
        start[f"{family}.decay"] = cfg.events.half_life_days > 0
        if cfg.events.half_life_days > 0 and val.span_days >= 1:
            start[f"{family}.half_life_fraction"] = min(max(cfg.events.half_life_days / val.span_days, 0.01), 2.0)
        start[f"{family}.rating_value"] = cfg.events.use_rating_value
    if family == "als":
        events = {"events.half_life_days": cfg.events.half_life_days,
                  "events.use_rating_value": cfg.events.use_rating_value}
        scale = 1.0 + cfg.als.alpha * mean_weight(val, events, cfg.als.weighting)
        start["als.relative_regularization"] = min(max(cfg.als.regularization / scale, 0.01), 100.0)
    return start


def family_params(params: dict[str, Any], family: str) -> dict[str, Any]:
    """The `family.*` settings without their prefix (what `fit_known` takes)."""
    prefix = family + "."
    return {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}


def fit_trial(val: Validation, cfg: TrainConfig, family: str, params: dict[str, Any],
              on_sweep: Any = None) -> tuple[Recommender, Any]:
    """Fit `family` with these settings on the validation's training side; returns (model, confidences)."""
    conf = val.confidences(params.get("events.half_life_days"), params.get("events.use_rating_value"))
    gram = val.gram() if family == "ease" else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # implicit's notice about BLAS threads
        model = fit_known(family, conf, family_params(params, family), cfg.als, on_sweep=on_sweep, gram=gram)
    return model, conf


def score_config(val: Validation, cfg: TrainConfig, family: str, params: dict[str, Any]) -> np.ndarray:
    """Per-user validation NDCG of one configuration (the publish gate scores the published bundle's
    configuration this way)."""
    if family == "popularity":  # on the future, the trend-aware popularity that serving uses
        return val.popularity_per_user(cfg.popularity.half_life_days if val.cut is not None else 0.0)
    model, conf = fit_trial(val, cfg, family, params)
    return val.ndcg_per_user(lambda rows: model.user_scores(rows, conf))


def config_params(cfg: TrainConfig, family: str) -> dict[str, Any]:
    """A config's settings of `family` as config paths (the publish gate refits them)."""
    params = {f"{family}.{f.name}": getattr(getattr(cfg, family), f.name)
              for f in dataclasses.fields(getattr(cfg, family))} if family != "popularity" else {}
    params["events.half_life_days"] = cfg.events.half_life_days
    params["events.use_rating_value"] = cfg.events.use_rating_value
    return params


def _best_popularity_half_life(val: Validation, cfg: TrainConfig) -> tuple[float, dict[float, float]]:
    if "popularity.half_life_days" in cfg.pinned or val.span_days < 1:
        return cfg.popularity.half_life_days, {}
    scores = {}
    for fraction in POPULARITY_HALF_LIFE_FRACTIONS:
        half_life = round(fraction * val.span_days, 3)
        scores[half_life] = val.popularity_ndcg(half_life)
    return max(scores, key=lambda h: (scores[h], -h)), scores


#: Once every family has had this many trials, those whose best is below this share of the leader's
#: are dropped (the two best always stay), and the remaining time goes to the families still in the race.
MIN_TRIALS_BEFORE_ELIMINATION = 12
ELIMINATE_BELOW = 0.95
KEEP_AT_LEAST = 2


#: Share of the budget kept for the finals (each family's best refitted on the second split).
FINALS_SHARE = 0.15
FINALISTS_PER_FAMILY = 3


@dataclass
class Finalist:
    """A family's best trial, scored again on the second validation split."""

    trial: int
    family: str
    search: float  # NDCG@k on the search split (where it was chosen: optimistic)
    final: float  # NDCG@k on the finals split (fresh)
    seconds: float

    @property
    def score(self) -> float:
        return (self.search + self.final) / 2


def tune_known(val: Validation, finals: Validation, cfg: TrainConfig, budget_seconds: float,
               progress: bool = True) -> KnownTuning:
    """Search families and settings on `val`, then pick among each family's best on `finals` too;
    see the module docstring.

    Each family has its own TPE study (one TPE over all families settles on the first family that
    does well and starves the rest); the next trial goes to the family that has used the least time,
    so families share the budget evenly until weak ones are dropped. The best of hundreds of trials
    is flattered by the split it was chosen on (on data with nothing but popularity in it, the best of
    ~300 trials scored 1.7% above popularity, z = 1.7), so each family's best is refitted on a second
    split (`finals`, other held-out pairs): the winner has the best mean of both, and must beat
    popularity on the second alone."""
    import optuna
    from tqdm.auto import tqdm

    started = time.perf_counter()
    deadline = started + budget_seconds * (1 - FINALS_SHARE)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    families = candidate_families(cfg, len(val.items))
    pop_half_life, _ = _best_popularity_half_life(val, cfg)
    popularity = val.popularity_ndcg(pop_half_life if val.cut is not None else 0.0)
    every = max(1, cfg.als.iterations // 3)
    studies = {}
    for i, family in enumerate(families):
        sampler = optuna.samplers.TPESampler(seed=cfg.tuning.seed + i, multivariate=True, n_startup_trials=5)
        pruner = optuna.pruners.PercentilePruner(75.0, n_startup_trials=5, n_warmup_steps=every)
        studies[family] = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)
        studies[family].enqueue_trial(_starting_point(cfg, family, val), skip_if_exists=True)
    spent = {f: 0.0 for f in families}
    alive = list(families)
    trials: list[Trial] = []
    bar = tqdm(desc=f"tuning ({budget_seconds:.0f} s)", unit="trial", disable=not progress, leave=False)
    while alive and len(trials) < cfg.tuning.max_trials and time.perf_counter() < deadline:
        family = min(alive, key=lambda f: spent[f])
        study = studies[family]
        trial = study.ask()
        t0 = time.perf_counter()
        params = _suggest(trial, cfg, val, family)

        def on_sweep(sweep: int, model: Recommender, trial: optuna.Trial = trial) -> None:
            if time.perf_counter() > deadline:
                raise optuna.TrialPruned("time budget spent")
            if sweep % every == 0 and sweep < cfg.als.iterations:
                trial.report(val.ndcg(lambda rows: model.user_scores(rows)), sweep)
                if trial.should_prune():
                    raise optuna.TrialPruned()

        state, value = "complete", None
        try:
            model, conf = fit_trial(val, cfg, family, params, on_sweep if family == "als" else None)
            value = val.ndcg(lambda rows: model.user_scores(rows, conf))
            value = value if math.isfinite(value) else 0.0
            study.tell(trial, value)
        except optuna.TrialPruned:
            state = "pruned"
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        except (ValueError, ArithmeticError, MemoryError, np.linalg.LinAlgError) as exc:
            logging.getLogger("minirec.tuning").warning("trial %d (%s) failed: %s", len(trials), family, exc)
            state = "fail"
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        seconds = time.perf_counter() - t0
        spent[family] += seconds
        trials.append(Trial(len(trials), family, params, value, round(seconds, 2), state))
        alive = _still_in_race(alive, trials)
        bar.update(1)
        best = max((t for t in trials if t.value is not None), key=lambda t: t.value, default=None)
        if best is not None:
            bar.set_postfix_str(f"best {best.family} NDCG@{val.k} {best.value:.4f} (popularity {popularity:.4f})")
    bar.close()
    completed = [t for t in trials if t.value is not None]
    common = dict(popularity=popularity, popularity_half_life_days=pop_half_life, trials=trials,
                  budget_seconds=round(budget_seconds, 1), n_users=len(val.rows), k=val.k)
    if not completed:
        return KnownTuning(_untuned_family(cfg), {}, float("nan"), seconds=round(time.perf_counter() - started, 2),
                           note="the budget ended before a trial completed: training the config's defaults",
                           **common)
    finalists, per_user = _finals(finals, cfg, completed, started + budget_seconds)
    winner = max(finalists, key=lambda f: (f.score, -f.trial))
    best = next(t for t in completed if t.number == winner.trial)
    # on the future, the model must beat the best sellers of the chosen trend half-life, not just all-time ones
    versus = Comparison.of(per_user[winner.trial],
                           finals.popularity_per_user(pop_half_life if finals.cut is not None else 0.0))
    common.update(gain=versus.gain, stderr=versus.stderr, seconds=round(time.perf_counter() - started, 2),
                  finalists=[dataclasses.asdict(f) for f in finalists])
    if not versus.beats_among(len(finalists)):
        return KnownTuning("popularity", {}, popularity, note=(
            f"no personalized model beat popularity on this app's validation data (best: {best.family}; on the "
            f"second split NDCG@{val.k} {versus.model:.4f} vs popularity {versus.popularity:.4f}, gain "
            f"{versus.gain:+.4f} ± {versus.stderr:.4f}, not significant among {len(finalists)} finalists): known "
            "users get popularity"), **common)
    return KnownTuning(best.family, dict(best.params), best.value, per_user=per_user[winner.trial], **common)


def _finals(finals: Validation, cfg: TrainConfig, completed: list[Trial],
            deadline: float) -> tuple[list[Finalist], dict]:
    """Each family's best trial, then while the budget lasts its next best (up to
    `FINALISTS_PER_FAMILY`), refitted on the finals split.

    Near-ties on the search split are decided by noise (ML-100k: settings 0.004 apart there were 0.007
    apart the other way on the test split), so a few per family go to the finals, not just the best."""
    leaders: dict[str, list[Trial]] = {}
    for t in sorted(completed, key=lambda t: (-t.value, t.number)):
        mine = leaders.setdefault(t.family, [])
        if len(mine) < FINALISTS_PER_FAMILY:
            mine.append(t)
    by_rank = [t for rank in range(FINALISTS_PER_FAMILY)
               for t in sorted((m[rank] for m in leaders.values() if len(m) > rank), key=lambda t: -t.value)]
    out, per_user = [], {}
    for t in by_rank:
        if t not in (m[0] for m in leaders.values()) and time.perf_counter() > deadline:
            break  # every family's best is in; the runners-up only while time is left
        t0 = time.perf_counter()
        per_user[t.number] = score_config(finals, cfg, t.family, t.params)
        out.append(Finalist(t.number, t.family, t.value, float(np.mean(per_user[t.number])),
                            round(time.perf_counter() - t0, 2)))
    return out, per_user


def _still_in_race(alive: list[str], trials: list[Trial]) -> list[str]:
    """Drop families far behind the leader once every family has had its share of trials."""
    if len(alive) <= KEEP_AT_LEAST or min(sum(t.family == f for t in trials) for f in alive) \
            < MIN_TRIALS_BEFORE_ELIMINATION:
        return alive
    best = {f: max((t.value for t in trials if t.family == f and t.value is not None), default=0.0) for f in alive}
    ranked = sorted(alive, key=lambda f: -best[f])
    leader = best[ranked[0]]
    return [f for i, f in enumerate(ranked) if i < KEEP_AT_LEAST or best[f] >= ELIMINATE_BELOW * leader]


def _untuned_family(cfg: TrainConfig) -> str:
    return "als" if cfg.model.family == "auto" else cfg.model.family


def apply_known(cfg: TrainConfig, tuning: KnownTuning) -> TrainConfig:
    """The config with the tuned family and settings filled in (pinned values were never searched)."""
    tuned = cfg.copy()
    tuned.model.family = tuning.family if tuning.params or tuning.family == "popularity" else _untuned_family(cfg)
    for path, value in tuning.params.items():
        tuned.set(path, value)
    if "popularity.half_life_days" not in cfg.pinned:
        tuned.popularity.half_life_days = tuning.popularity_half_life_days
    return tuned


@dataclass
class TuningOutcome:
    """Everything tuning decided, for the report and the manifest."""

    known: KnownTuning | None = None
    cold: dict[str, Any] | None = None
    skipped: list[str] = field(default_factory=list)
    #: The finals split the known-user model was chosen on (the publish gate scores on it too).
    validation: Validation | None = field(default=None, repr=False)
    #: How validation held answers out: "temporal" (the merchant's future), "stratified" or "last-out".
    protocol: str | None = None
    #: Repeat purchases (temporal validation only): `offline_training.tuning_repeat.RepeatTuning`.
    repeat: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {"protocol": self.protocol, "known": self.known.to_dict() if self.known else None, "cold": self.cold,
                "repeat": self.repeat.to_dict() if self.repeat is not None else None, "skipped": self.skipped}
