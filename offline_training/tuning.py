"""Choose the known-user model and its settings on the app's own data (Optuna TPE, seeded, pruned).

The search runs on a validation split of the training data (`offline_training/validation.py`) within
a time budget. It starts from the config's own values of every candidate family (so the defaults
are always tried), then lets TPE explore:

- `als`: factors, regularization, alpha, confidence weighting (none / BM25 / TF-IDF);
- `ease`: λ (only if the dense solve fits `ease.max_memory_mb`); the weights kept per item are
  applied after the solve, so each solve is scored at several counts (`AFTER_FIT`), not refitted;
- `rp3beta`: α, β and the weights kept per item;
- `itemknn`: similarity (cosine / BM25 / TF-IDF) and neighbourhood size;
- for the families that read confidences (ALS, item kNN): an event-decay half-life as a fraction of
  the data's time span (or none), and, on rating data, the rating value as confidence.

A value set in the config file is pinned: it is used as written and not searched. Each family has
its own study and the families share the budget evenly (the next trial goes to the family that has
used the least time) until those far behind the leader are dropped.

A family whose full fit is expensive (more than `EXPENSIVE_SHARE` of its part of the budget: EASE
on a large catalogue) would get only a trial or two that way, so it searches in two rungs
(successive halving). Proxy trials fit and rank on the catalogue's most popular items only (EASE:
37% of them, a 20th of the n³ solve; on ML-100k, Amazon Scientific and a 9,000-item mall the best λ
there was the full catalogue's best or its neighbour on a ×2–3 grid): a line search on λ from the
config's value, then TPE. Each time the proxies have spent half a full fit's time (or the line
search has converged), the best proxy setting in their top third not yet fitted in full is promoted
to a full trial. EASE's first trial is a proxy of its starting point, which also
predicts the full solve's time. Only full trials compete (elimination, finals, the winner); proxy
trials are listed with state `proxy` and the size of their catalogue. A family joins by declaring
how its fit time grows with the catalogue (`COST_EXPONENT`); only EASE does so far.

ALS trials report their validation NDCG between sweeps so that a percentile pruner stops those in
the bottom quarter early, and any trial still running at the deadline is stopped; an expensive
family starts no full fit that could not end by the deadline once it has one.
The popularity half-life is chosen on the same split.
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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from offline_training.validation import Comparison, Validation
from recsys.als import weight_confidences
from recsys.config import ALSConfig, TrainConfig
from recsys.item_models import ItemItemModel, ease_fits
from recsys.known import FAMILIES, fit_known
from recsys.recommender import Recommender

if TYPE_CHECKING:  # tuning_repeat imports validation, like this module; only the annotation is needed
    from offline_training.tuning_repeat import RepeatTuning

#: Fractions of the data's time span tried as the popularity half-life (0 = no decay).
POPULARITY_HALF_LIFE_FRACTIONS = (0.0, 0.01, 0.03, 0.1, 0.3, 1.0)
#: Families whose scores read the confidences (and so the event settings).
READS_CONFIDENCES = ("als", "itemknn")
#: Settings applied after the fit, with the values a full trial scores: EASE keeps each item's
#: strongest weights after the solve, so one solve is scored at every count instead of refitted.
AFTER_FIT: dict[str, tuple[str, tuple[int, ...]]] = {"ease": ("ease.neighbours", (100, 200, 500, 1000))}
#: Families that may search on a proxy catalogue (their most popular items) when a full fit is
#: expensive, with how their fit time grows with the catalogue, as n_items ** exponent (EASE's dense
#: Cholesky inverse: n³): it sizes the proxy catalogue and predicts a full fit's time from a proxy's.
#: A family joins by an entry here, once its best settings on a proxy are shown to be its best in full.
COST_EXPONENT: dict[str, float] = {"ease": 3.0}
#: EASE's λ is searched in this range (log scale).
EASE_L2_RANGE = (1.0, 1e5)
#: The setting a family's proxy rung line-searches first (log scale: step, range) before TPE takes
#: over: a few well-placed values before a first full fit that may be the only one.
PROXY_LINE: dict[str, tuple[str, float, tuple[float, float]]] = {"ease": ("ease.l2", 3.0, EASE_L2_RANGE)}
#: A family is expensive when one full fit takes more than this share of its part of the search.
EXPENSIVE_SHARE = 1 / 8
#: A proxy catalogue is sized for a solve of about this share of a full one's time (EASE: the 37%
#: most popular items); catalogues smaller than `MIN_PROXY_CATALOGUE` get none.
PROXY_COST = 1 / 20
MIN_PROXY_CATALOGUE = 1000
#: Before each full fit of an expensive family, its proxy trials spend this share of a full fit's time
#: (or less, once its line search has converged) ...
PROXY_SPEND = 1 / 2
#: ... and only a setting in this top share of the proxy trials is promoted (successive halving's η = 3).
PROMOTE_TOP = 1 / 3


@dataclass
class Trial:
    number: int
    family: str
    params: dict[str, Any]
    value: float | None  # validation NDCG@k (a proxy's on its catalogue); None if pruned or failed
    seconds: float
    state: str  # complete, proxy (a complete proxy trial), pruned, fail
    #: Size of the catalogue a proxy trial was fitted and ranked on (its most popular items); None: full.
    proxy_items: int | None = None

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
    0.3 / 1 / 3, all NDCG@10 ≈ 0.48), which this makes flat in ρ. A setting applied after the fit
    (`AFTER_FIT`) is not searched: it takes the config's value, and a full trial scores its others."""
    max_k = max_neighbours(len(val.items))
    space: dict[str, Any] = {
        "als.factors": lambda name: trial.suggest_int(name, 16, 256, log=True),
        "als.alpha": lambda name: trial.suggest_float(name, 0.05, 50.0, log=True),
        "als.weighting": lambda name: trial.suggest_categorical(name, ["none", "bm25", "tfidf"]),
        "ease.l2": lambda name: trial.suggest_float(name, *EASE_L2_RANGE, log=True),
        "ease.neighbours": lambda name: trial.suggest_int(name, min(10, max_k), max_k, log=True),
        "rp3beta.alpha": lambda name: trial.suggest_float(name, 0.1, 2.0),
        "rp3beta.beta": lambda name: trial.suggest_float(name, 0.0, 1.0),
        "rp3beta.neighbours": lambda name: trial.suggest_int(name, min(10, max_k), max_k, log=True),
        "itemknn.similarity": lambda name: trial.suggest_categorical(name, ["cosine", "bm25", "tfidf"]),
        "itemknn.neighbours": lambda name: trial.suggest_int(name, min(10, max_k), max_k, log=True),
    }
    params = _events(trial, cfg, val, family) if family in READS_CONFIDENCES else {}
    after_fit = AFTER_FIT.get(family, ("",))[0]
    for path, suggest in space.items():
        if path == after_fit:
            params[path] = min(int(cfg.get(path)), max_k)
        elif path.startswith(family + "."):
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
    max_k = max_neighbours(len(val.items))
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


def max_neighbours(n_items: int) -> int:
    """The most weights per item the item-item families search (1,000, or fewer on small catalogues)."""
    return max(2, min(1000, n_items - 1))


def proxy_catalogue(val: Validation, family: str) -> np.ndarray | None:
    """The items a proxy trial of `family` is fitted and ranked on: the most popular (users per item),
    as many as make its fit cost about `PROXY_COST` of a full one; None for a small catalogue or a
    family without proxies (`COST_EXPONENT`)."""
    n_items = len(val.items)
    if n_items < MIN_PROXY_CATALOGUE or family not in COST_EXPONENT:
        return None
    share = PROXY_COST ** (1 / COST_EXPONENT[family])
    users_per_item = np.diff(val.confidences().tocsc().indptr)
    return np.sort(np.argsort(-users_per_item, kind="stable")[: round(share * n_items)])


def fit_trial(val: Validation, cfg: TrainConfig, family: str, params: dict[str, Any],
              on_sweep: Any = None, items: np.ndarray | None = None) -> tuple[Recommender, Any]:
    """Fit `family` with these settings on the validation's training side; returns (model, confidences).
    With `items` (a proxy catalogue) only those columns are fitted (EASE: that block of the Gram)."""
    conf = val.confidences(params.get("events.half_life_days"), params.get("events.use_rating_value"))
    gram = val.gram() if family == "ease" else None
    if items is not None:
        conf = conf[:, items].tocsr()
        gram = gram[np.ix_(items, items)] if gram is not None else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # implicit's notice about BLAS threads
        model = fit_known(family, conf, family_params(params, family), cfg.als, on_sweep=on_sweep, gram=gram)
    return model, conf


def trial_scorer(model: Recommender, conf: Any, n_items: int,
                 items: np.ndarray | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """`score_rows` of a trial's model for `Validation.ndcg`; a proxy model (fitted on `items`) never
    ranks the items outside its catalogue."""
    def score_rows(rows: np.ndarray) -> np.ndarray:
        scores = model.user_scores(rows, conf)
        if items is None:
            return scores
        out = np.full((len(rows), n_items), -np.inf, dtype=np.float32)
        out[:, items] = scores
        return out
    return score_rows


def run_trial(val: Validation, cfg: TrainConfig, family: str, params: dict[str, Any], on_sweep: Any = None,
              items: np.ndarray | None = None) -> tuple[float, dict[str, Any]]:
    """Fit and score one trial (on the proxy catalogue `items` if given): its validation NDCG and
    settings. A full trial of a family with a setting applied after the fit (`AFTER_FIT`) fits once
    at its largest value, scores every value, and keeps the best (ties: the smaller)."""
    path, grid = AFTER_FIT.get(family, ("", ()))
    values = [params[path]] if path else []
    if path and items is None and path not in cfg.pinned:
        values = sorted({min(v, max_neighbours(len(val.items))) for v in (*grid, params[path])})
    model, conf = fit_trial(val, cfg, family, {**params, path: max(values)} if path else params, on_sweep, items)

    def score(fitted: Recommender) -> float:
        value = val.ndcg(trial_scorer(fitted, conf, len(val.items), items))
        return value if math.isfinite(value) else 0.0

    if not path:
        return score(model), params
    assert isinstance(model, ItemItemModel)
    scores = {v: score(model.keep(v)) for v in values}
    best = max(values, key=lambda v: (scores[v], -v))
    return scores[best], {**params, path: best}


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
        scores[half_life] = val.popularity_backtest(half_life)
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


@dataclass
class FamilySearch:
    """One family's part of the search: a TPE study of full trials and, for a family whose full fit
    is expensive, a second study of proxy trials whose best settings are promoted to full trials."""

    family: str
    #: The config's own values (Optuna parameters), the first trial of each study.
    start: dict[str, Any]
    #: The proxy catalogue (None: no proxies for this family or catalogue).
    items: np.ndarray | None
    new_study: Callable[[], Any]
    full: Any = None
    proxy: Any = None
    trials: list[Trial] = field(default_factory=list)
    #: Optuna parameters of each proxy trial (by `Trial.number`), to promote them.
    asked: dict[int, dict[str, Any]] = field(default_factory=dict)
    promotions: int = 0
    #: Nothing left to search (every setting is pinned or applied after the fit, and the one trial is done).
    exhausted: bool = False

    def __post_init__(self) -> None:
        self.full = self.new_study()
        if self.items is None:  # else the first trial is a proxy of the starting point
            self.full.enqueue_trial(self.start, skip_if_exists=True)

    def full_seconds(self, n_items: int) -> float | None:
        """A full trial's time: measured, or predicted from the quickest proxy; None if unknown."""
        measured = [t.seconds for t in self.trials if t.state == "complete"]
        if measured:
            return float(np.mean(measured))
        proxies = [t.seconds for t in self.trials if t.state == "proxy"]
        if proxies and self.items is not None:
            return min(proxies) * (n_items / len(self.items)) ** COST_EXPONENT[self.family]
        return None

    def candidate(self) -> Trial | None:
        """The best proxy trial among the top `PROMOTE_TOP` whose settings have had no full trial."""
        path = AFTER_FIT.get(self.family, ("",))[0]

        def key(t: Trial) -> tuple:
            return tuple(sorted((k, repr(v)) for k, v in t.params.items() if k != path))

        done = {key(t) for t in self.trials if t.proxy_items is None}
        proxies = sorted((t for t in self.trials if t.state == "proxy"), key=lambda t: (-(t.value or 0.0), t.number))
        top = proxies[: math.ceil(PROMOTE_TOP * len(proxies))]
        return next((t for t in top if key(t) not in done), None)

    def plan(self, cfg: TrainConfig, n_items: int, share: float, time_left: float) -> str | None:
        """The next step: "full" (a TPE trial), "proxy", "promote" (a full trial of `candidate`), or
        None (done). A family with a proxy catalogue starts with a proxy, which predicts a full fit's
        time; it is two-rung while a full fit costs more than `EXPENSIVE_SHARE` of its `share` of the
        search, and promotes once its proxies have spent `PROXY_SPEND` of a full fit (at most of its
        share: a prediction from a proxy is rough) per full fit to come, or its line search is done."""
        if self.exhausted:
            return None
        if self.items is None:
            return "full"
        cost = self.full_seconds(n_items)
        if cost is None:
            return "full" if any(t.proxy_items for t in self.trials) else "proxy"
        if cost <= EXPENSIVE_SHARE * share:
            return "full"
        has_full = any(t.state == "complete" for t in self.trials)
        if has_full and cost > time_left:
            return None  # another full fit would not end by the deadline
        proxy_seconds = sum(t.seconds for t in self.trials if t.proxy_items is not None)
        due = (proxy_seconds >= PROXY_SPEND * min(cost, share) * (self.promotions + 1)
               or self.family in PROXY_LINE and self.line_step(cfg) is None)
        return "promote" if due and self.candidate() is not None else "proxy"

    def line_step(self, cfg: TrainConfig) -> dict[str, float] | None:
        """The next proxy of the line search (`PROXY_LINE`): the best proxy's value times or divided by
        the step, then by its square root, whichever is untried first; None when all are (or when
        the setting is pinned): TPE then proposes the rest."""
        path, factor, (low, high) = PROXY_LINE.get(self.family, ("", 1.0, (0.0, 0.0)))
        proxies = [t for t in self.trials if t.state == "proxy"]
        if not path or path in cfg.pinned or not proxies:
            return None
        best = float(max(proxies, key=lambda t: (t.value, -t.number)).params[path])
        tried = [float(t.params[path]) for t in self.trials if t.proxy_items is not None]
        for step in (factor, factor ** 0.5):
            for value in (min(best * step, high), max(best / step, low)):
                if all(abs(math.log(value / x)) > 1e-6 for x in tried):
                    return {path: value}
        return None

    def ask(self, step: str, cfg: TrainConfig, val: Validation) -> tuple[Any, dict[str, Any], np.ndarray | None]:
        """An Optuna trial for `step`, its settings, and the catalogue to fit on (None: all items)."""
        if step == "proxy":
            if self.proxy is None:
                self.proxy = self.new_study()
                self.proxy.enqueue_trial(self.start, skip_if_exists=True)
            elif (step_to := self.line_step(cfg)) is not None:
                self.proxy.enqueue_trial(step_to)
            trial = self.proxy.ask()
            return trial, _suggest(trial, cfg, val, self.family), self.items
        if step == "promote":
            best = self.candidate()
            assert best is not None
            self.full.enqueue_trial(self.asked[best.number])
            self.promotions += 1
        elif not any(t.proxy_items is None for t in self.trials):
            self.full.enqueue_trial(self.start, skip_if_exists=True)
        trial = self.full.ask()
        return trial, _suggest(trial, cfg, val, self.family), None

    def record(self, done: Trial, trial: Any) -> None:
        """Keep a finished trial (and a proxy's Optuna parameters, should it be promoted). A family
        with nothing to search (all pinned) needs no proxies, and is done after one full trial."""
        self.trials.append(done)
        if done.proxy_items is not None:
            self.asked[done.number] = dict(trial.params)
        if done.value is not None and not trial.distributions:
            if done.proxy_items is None:
                self.exhausted = True
            else:
                self.items = None


def tune_known(val: Validation, finals: Validation, cfg: TrainConfig, budget_seconds: float,
               progress: bool = True) -> KnownTuning:
    """Search families and settings on `val`, then pick among each family's best on `finals` too;
    see the module docstring.

    Each family has its own TPE study (one TPE over all families settles on the first family that
    does well and starves the rest); the next trial goes to the family that has used the least time,
    so families share the budget evenly until weak ones are dropped, and an expensive family searches
    on a proxy catalogue first (`FamilySearch.plan`). The best of hundreds of trials
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
    share = (deadline - started) / max(len(families), 1)
    n_items = len(val.items)
    pop_half_life, _ = _best_popularity_half_life(val, cfg)
    popularity = val.popularity_ndcg(pop_half_life if val.cut is not None else 0.0)
    every = max(1, cfg.als.iterations // 3)
    searches: dict[str, FamilySearch] = {}
    for i, family in enumerate(families):
        def new_study(seed: int = cfg.tuning.seed + i) -> Any:
            sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=5)
            pruner = optuna.pruners.PercentilePruner(75.0, n_startup_trials=5, n_warmup_steps=every)
            return optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)
        searches[family] = FamilySearch(family, _starting_point(cfg, family, val), proxy_catalogue(val, family),
                                        new_study)
    spent = {f: 0.0 for f in families}
    if "ease" in families and budget_seconds > 0:  # XᵀX, which all EASE trials read: EASE's time
        t0 = time.perf_counter()
        val.gram()
        spent["ease"] += time.perf_counter() - t0
    alive = list(families)
    trials: list[Trial] = []
    bar = tqdm(desc=f"tuning ({budget_seconds:.0f} s)", unit="trial", disable=not progress, leave=False)
    while alive and len(trials) < cfg.tuning.max_trials and time.perf_counter() < deadline:
        plans = {f: searches[f].plan(cfg, n_items, share, deadline - time.perf_counter()) for f in alive}
        ready = [f for f in alive if plans[f] is not None]
        if not ready:
            break
        family = min(ready, key=lambda f: spent[f])
        search = searches[family]
        trial, params, items = search.ask(str(plans[family]), cfg, val)
        study = search.full if items is None else search.proxy
        t0 = time.perf_counter()

        def on_sweep(sweep: int, model: Recommender, trial: optuna.Trial = trial,
                     full: bool = items is None) -> None:
            if time.perf_counter() > deadline:
                raise optuna.TrialPruned("time budget spent")
            if full and sweep % every == 0 and sweep < cfg.als.iterations:
                trial.report(val.ndcg(lambda rows: model.user_scores(rows)), sweep)
                if trial.should_prune():
                    raise optuna.TrialPruned()

        state, value = "complete" if items is None else "proxy", None
        try:
            value, params = run_trial(val, cfg, family, params, on_sweep if family == "als" else None, items)
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
        trials.append(Trial(len(trials), family, params, value, round(seconds, 2), state,
                            None if items is None else len(items)))
        search.record(trials[-1], trial)
        alive = _still_in_race(alive, trials)
        bar.update(1)
        best = max((t for t in trials if t.state == "complete"), key=lambda t: t.value, default=None)
        if best is not None:
            bar.set_postfix_str(f"best {best.family} NDCG@{val.k} {best.value:.4f} (popularity {popularity:.4f})")
    bar.close()
    completed = [t for t in trials if t.state == "complete"]
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
    earlier = _loses_on_earlier_cuts(val, cfg, best, pop_half_life)
    if earlier:
        return KnownTuning("popularity", {}, popularity, note=(
            f"{best.family} beat popularity on the latest validation window but not across the earlier cuts "
            f"({earlier}): known users get popularity"), **common)
    return KnownTuning(best.family, dict(best.params), best.value, per_user=per_user[winner.trial], **common)


def _loses_on_earlier_cuts(val: Validation, cfg: TrainConfig, best: Trial, pop_half_life: float) -> str:
    """On a split in time, the winner refitted at the earlier cuts the popularity half-life was judged
    on (`Validation.popularity_backtest`): "" if its mean NDCG over those and the latest window beats
    popularity's, else the figures. One window can flatter a model (Ta-Feng's January, the Lunar New
    Year, made item kNN look better than best sellers; February disagreed)."""
    earlier = val.earlier_origins()
    if not earlier:
        return ""
    model = [best.value or 0.0] + [float(np.mean(score_config(v, cfg, best.family, best.params))) for v in earlier]
    popular = [val.popularity_ndcg(pop_half_life)] + [v.popularity_ndcg(pop_half_life) for v in earlier]
    if np.mean(model) > np.mean(popular):
        return ""
    return (f"NDCG@{val.k} per cut, newest first: {best.family} " + " / ".join(f"{m:.4f}" for m in model)
            + ", popularity " + " / ".join(f"{p:.4f}" for p in popular))


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
    """Drop families far behind the leader once every family has had its share of trials (proxy
    trials count as trials, only full ones as results; a family still on proxies alone stays)."""
    if len(alive) <= KEEP_AT_LEAST or min(sum(t.family == f for t in trials) for f in alive) \
            < MIN_TRIALS_BEFORE_ELIMINATION:
        return alive

    def best_of(family: str) -> float | None:
        mine = [t for t in trials if t.family == family]
        full = [t.value for t in mine if t.state == "complete"]
        return max(full) if full else (None if any(t.proxy_items for t in mine) else 0.0)

    best = {f: best_of(f) for f in alive}
    ranked = sorted(alive, key=lambda f: -best[f] if best[f] is not None else math.inf)
    leader = best[ranked[0]] or 0.0
    return [f for i, f in enumerate(ranked)
            if i < KEEP_AT_LEAST or best[f] is None or best[f] >= ELIMINATE_BELOW * leader]


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
    #: Repeat purchases (temporal validation only).
    repeat: "RepeatTuning | None" = None

    def to_dict(self) -> dict[str, Any]:
        return {"protocol": self.protocol, "known": self.known.to_dict() if self.known else None, "cold": self.cold,
                "repeat": self.repeat.to_dict() if self.repeat is not None else None, "skipped": self.skipped}
