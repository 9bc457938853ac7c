"""Training configuration: documented defaults, overridable from a TOML file.

Every field's comment is its documentation; `minirec train --print-config` prints the defaults
as TOML, which is also the template for a config file. Unknown keys in a file are errors, so a
typo never silently falls back to a default.
"""

from __future__ import annotations

import copy
import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vocab.fields import FIELDS


#: Offline evaluation protocols (offline_training/splits.py implements them).
PROTOCOLS = ("temporal", "stratified", "last-out", "cold-users", "cold-items", "fold-in")


def doc(default: Any, text: str) -> Any:
    """A dataclass field with its documentation (printed by `minirec train --print-config`)."""
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata={"doc": text})
    return field(default=default, metadata={"doc": text})


@dataclass
class EventsConfig:
    """How events become confidences of the implicit-feedback matrix."""

    weights: dict[str, float] = doc(
        {"impression": 0.0, "view": 1.0, "click": 2.0, "favorite": 4.0, "cart": 6.0, "purchase": 10.0, "rating": 1.0},
        "Confidence weight of each event type (0 = ignored; impressions are not interest).")
    use_rating_value: bool = doc(False, "Multiply a `rating` event's weight by its value (stars).")
    half_life_days: float = doc(0.0, "Half-life of an event's weight in days, back from the newest event (0 = no decay).")


@dataclass
class ModelConfig:
    """The model for users seen in training: a family, or "auto" to let tuning choose on the data."""

    family: str = doc("auto", '"auto" (tuning picks the family and its settings on a validation split; without '
                              'tuning, als), "als", "ease", "rp3beta", "itemknn" or "popularity".')


@dataclass
class ALSConfig:
    """implicit's AlternatingLeastSquares (matrix factorization of the confidences).

    These values are the starting point of tuning and what `--no-tune` trains; a value set in a
    config file is pinned (tuning leaves it alone)."""

    factors: int = doc(64, "Latent factors.")
    regularization: float = doc(10.0, "L2 regularization (implicit's default 0.01 overfits badly here).")
    alpha: float = doc(1.0, "Scale of the (weighted) confidences.")
    iterations: int = doc(15, "ALS sweeps.")
    weighting: str = doc("bm25", 'Confidence weighting before ALS: "bm25", "tfidf" or "none".')
    bm25_k1: float = doc(3.0, "BM25 K1 of the weighting.")
    bm25_b: float = doc(0.75, "BM25 B of the weighting.")
    random_state: int = doc(0, "Seed of the factor initialization.")


@dataclass
class EASEConfig:
    """EASE (Steck 2019): closed-form item-item regression; needs a dense n_items² solve."""

    l2: float = doc(500.0, "L2 regularization λ of the regression.")
    neighbours: int = doc(500, "Weights kept per item (the strongest); the rest are dropped for serving.")
    max_memory_mb: float = doc(2048.0, "EASE is a candidate only if its solve (2 × n_items² × 8 bytes) fits this; "
                                       "2048 MB allows about 11,500 items.")


@dataclass
class RP3BetaConfig:
    """RP3beta (Paudel et al. 2017): random walk item → user → item with a popularity penalty."""

    alpha: float = doc(1.0, "Exponent of the transition probabilities.")
    beta: float = doc(0.5, "Popularity penalty: the arrival item's degree to the power -beta.")
    neighbours: int = doc(200, "Weights kept per item.")


@dataclass
class ItemKNNConfig:
    """implicit's item-item nearest neighbours over the confidences."""

    similarity: str = doc("bm25", 'Similarity: "cosine", "bm25" or "tfidf".')
    neighbours: int = doc(200, "Neighbours kept per item.")


@dataclass
class TuningConfig:
    """The search `minirec train` and `minirec evaluate` run on a validation split of the training side."""

    enabled: bool = doc(True, "Search family and settings (false: train the config as written, like --no-tune).")
    budget_seconds: float = doc(60.0, "Time for the search, plus budget_seconds_per_million per million interactions.")
    budget_seconds_per_million: float = doc(120.0, "Extra search time per million interactions (a trial costs more "
                                                   "on more data).")
    max_trials: int = doc(300, "Stop after this many trials even if time is left.")
    validation_share: float = doc(0.1, "Share of each user's positive pairs held out for validation (at least one "
                                       "of users with two or more): small, so that trials learn from nearly as "
                                       "much as the final model.")
    max_validation_users: int = doc(5000, "Validate on at most this many users (a seeded sample) to bound trial time.")
    min_validation_users: int = doc(50, "Below this many users with at least two positive pairs, tuning is skipped.")
    cold_share: float = doc(0.25, "Share of the budget for the first-visit settings (hybrid weight, kernel fields).")
    cold_folds: int = doc(3, "Disjoint sets of held-out users the first-visit settings are judged on (as time "
                             "allows: each needs its own hybrid fit).")
    seed: int = doc(0, "Seed of the validation split and of the sampler.")
    validate_on_time: bool = doc(True, "Validate on the merchant's future (train before a cut, test after it) when the "
                                       "data spans at least min_span_days; false: random held-out pairs.")
    min_span_days: float = doc(7.0, "Least span of the interactions' timestamps for a split in time.")
    publish_tolerance: float = doc(0.02, "Publish gate: the new bundle may be at most this much worse (relative "
                                         "NDCG) than the published one on the same validation split.")


@dataclass
class HybridConfig:
    """LightFM with user features from merged profiles and item features from content."""

    no_components: int = doc(32, "Embedding size.")
    loss: str = doc("warp", 'LightFM loss: "warp", "bpr", "warp-kos" or "logistic".')
    epochs: int = doc(20, "Training epochs.")
    learning_rate: float = doc(0.05, "SGD learning rate.")
    item_alpha: float = doc(1e-6, "L2 penalty on item feature embeddings.")
    user_alpha: float = doc(1e-6, "L2 penalty on user feature embeddings.")
    max_sampled: int = doc(10, "WARP: negatives sampled per positive at most.")
    title_tokens: bool = doc(True, "Add title tokens (jieba for Chinese, words for ASCII) as item features.")
    min_token_items: int = doc(2, "Keep a title token only if at least this many items have it.")
    price_bands: list[float] = doc([10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0],
                                   "Price band edges in the app's currency; an item's band is an item feature.")
    random_state: int = doc(0, "Seed of LightFM.")


@dataclass
class ColdStartConfig:
    """First-visit users: profile-neighbour popularity blended with the LightFM hybrid."""

    hybrid_weight: float = doc(1.0, "Share of the hybrid in the blend; the rest is profile-neighbour popularity "
                                    "(0..1). Tuned on held-out users unless pinned: interests favour the hybrid, "
                                    "demographics alone the kernel.")
    fields: list[str] = doc([], "Profile fields of the neighbour kernel (e.g. p.age_band); [] = every "
                                "single-valued field. Tuned unless pinned.")
    segments: bool = doc(True, "Profile-neighbour popularity (true) or plain, trend-weighted best sellers (false) "
                               "beside the hybrid: segments help only where they beat the global list (on sparse "
                               "segments they are worse). Tuned unless pinned.")
    field_weights: dict[str, float] = doc({}, "Match weight w_f of categorical fields (default 1.0).")
    power: float = doc(1.5, "Sharpness p of the neighbour weights.")
    bandwidth_scale: float = doc(0.75, "Bandwidth of numeric fields (age bands, tiers) in standard deviations.")


@dataclass
class PopularityConfig:
    """Global, per-category and per-segment popularity."""

    half_life_days: float = doc(0.0, "Half-life of popularity (best sellers, first visits' neighbours) in days "
                                      "(0 = plain counts); tuned on the merchant's future unless pinned.")
    segment_shrinkage: float = doc(50.0, "Pseudo-count pulling a segment's popularity toward global popularity.")


@dataclass
class RepeatConfig:
    """Repeat purchases ("buy again"): scoring a user's own past purchases, and their share of the home feed.

    Tuned on the merchant's future when the data has time (a split in time), unless pinned; 0 everywhere
    is "buy again" by frequency with no repurchases in the home feed (bought items excluded)."""

    half_life_days: float = doc(0.0, "Recency: a past purchase's score halves every this many days since it (0 = off).")
    cycle_weight: float = doc(0.0, "Weight of the distance between the days since the last purchase and the item's "
                                   "usual repurchase cycle (0 = off).")
    mix_weight: float = doc(0.0, "Home feed: a past purchase's repeat score × this is added to its score (z units) "
                                 "and it stays in the feed; 0 = purchases are excluded from the home feed.")


@dataclass
class RelatedConfig:
    """Related items of the detail page."""

    neighbours: int = doc(50, "Neighbours stored per item.")
    content_weight: float = doc(0.2, "Share of content similarity in the related score (0..1).")


@dataclass
class SearchConfig:
    """The search index built into the bundle (docs/search-relevance.md has the measurements)."""

    analysis: dict[str, list[str]] = doc(
        {name: ["words", "bigrams", "chars"] for name in ("title", "brand", "category", "tags")},
        'Per field, a subset of "words" (jieba search mode), "bigrams" (overlapping Chinese character '
        'pairs) and "chars" (single Chinese characters); queries get every analysis any field uses.')
    field_weights: dict[str, float] = doc({"title": 1.0, "brand": 1.5, "category": 1.0, "tags": 0.3},
                                          "Weight of each field's BM25 score in the sum.")
    k1: float = doc(1.2, "BM25 term-frequency saturation.")
    b: float = doc(0.75, "BM25 length normalization (0 = none, 1 = full).")


@dataclass
class EvaluateConfig:
    """The evaluation `minirec train` runs for the bundle's report."""

    protocols: list[str] = doc(["temporal"], "Protocols to run ([] to skip). temporal scores known users and first "
                                             "visits on the future; where the data spans too little time it is "
                                             "replaced by stratified and cold-users.")
    temporal_cut: str = doc("", "Cut of the temporal protocol: a date (`2001-02-01`, UTC) or Unix seconds; empty = "
                                "`test_days` before the newest event.")
    test_days: float = doc(30.0, "Days after the cut that the temporal protocol (and tuning's split in time) tests on, "
                                 "at most a quarter of the data's span.")
    k: int = doc(10, "Cut-off of the metrics.")
    seed: int = doc(0, "Seed of the splits.")
    max_users: int = doc(20000, "Rank at most this many test users (a seeded sample): each goes through the "
                                "serving pipeline, about a millisecond or two apiece.")


@dataclass
class PlatformConfig:
    """Consent scopes of the platform profile."""

    scopes: dict[str, list[str]] = doc(
        {"basic": ["age_band", "gender", "occupation"], "location": ["city_tier", "region"], "interests": ["interests"]},
        "Consent scope → the platform profile columns it covers; a column is used only with its scope.")


@dataclass
class TrainConfig:
    events: EventsConfig = field(default_factory=EventsConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    als: ALSConfig = field(default_factory=ALSConfig)
    ease: EASEConfig = field(default_factory=EASEConfig)
    rp3beta: RP3BetaConfig = field(default_factory=RP3BetaConfig)
    itemknn: ItemKNNConfig = field(default_factory=ItemKNNConfig)
    tuning: TuningConfig = field(default_factory=TuningConfig)
    hybrid: HybridConfig = field(default_factory=HybridConfig)
    coldstart: ColdStartConfig = field(default_factory=ColdStartConfig)
    popularity: PopularityConfig = field(default_factory=PopularityConfig)
    repeat: RepeatConfig = field(default_factory=RepeatConfig)
    related: RelatedConfig = field(default_factory=RelatedConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    platform: PlatformConfig = field(default_factory=PlatformConfig)

    def __post_init__(self) -> None:
        #: "section.key" of every value a config file set explicitly: tuning leaves these alone.
        self.pinned: set[str] = set()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def get(self, path: str) -> Any:
        """The value at "section.key"."""
        section, key = path.split(".", 1)
        return getattr(getattr(self, section), key)

    def set(self, path: str, value: Any) -> None:
        section, key = path.split(".", 1)
        setattr(getattr(self, section), key, value)

    def copy(self) -> "TrainConfig":
        """A deep copy that keeps the pinned keys."""
        clone = copy.deepcopy(self)
        clone.pinned = set(self.pinned)
        return clone

    def scope_map(self) -> dict[str, tuple[str, ...]]:
        return {scope: tuple(cols) for scope, cols in self.platform.scopes.items()}


class ConfigError(ValueError):
    """A config file is unreadable or has unknown keys or wrong types."""


def _merge(obj: Any, values: dict[str, Any], where: str, pinned: set[str] | None = None, path: str = "") -> None:
    known = {f.name: f for f in dataclasses.fields(obj)}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"{where}: unknown key '{key}' (known: {', '.join(sorted(known))})")
        current = getattr(obj, key)
        if pinned is not None and path and not (isinstance(value, dict) and not value):
            pinned.add(f"{path}.{key}")  # an empty table (a header left uncommented) pins nothing
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}.{key}: expected a table")
            _merge(current, value, f"{where}.{key}", pinned, key if not path else f"{path}.{key}")
        elif isinstance(current, dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}.{key}: expected a table")
            setattr(obj, key, {**current, **value})
        elif isinstance(current, bool) != isinstance(value, bool) or (
            isinstance(current, (int, float)) and not isinstance(value, (int, float))
        ) or (isinstance(current, (str, list)) and not isinstance(value, type(current))):
            raise ConfigError(f"{where}.{key}: expected {type(current).__name__}, got {value!r}")
        else:
            setattr(obj, key, type(current)(value) if isinstance(current, float) else value)


def check_config(config: TrainConfig, where: str = "config") -> TrainConfig:
    """Reject values that would fail (or silently misbehave) deep inside training."""
    from recsys.schema import EVENT_TYPES

    problems = []
    unknown_events = set(config.events.weights) - set(EVENT_TYPES)
    if unknown_events:
        problems.append(f"events.weights: unknown event types {sorted(unknown_events)}")
    if any(w < 0 for w in config.events.weights.values()):
        problems.append("events.weights: weights must be >= 0")
    if config.als.weighting not in ("bm25", "tfidf", "none"):
        problems.append(f"als.weighting: {config.als.weighting!r} is not bm25, tfidf or none")
    families = ("auto", "als", "ease", "rp3beta", "itemknn", "popularity")
    if config.model.family not in families:
        problems.append(f"model.family: {config.model.family!r} is not one of {', '.join(families)}")
    if config.itemknn.similarity not in ("cosine", "bm25", "tfidf"):
        problems.append(f"itemknn.similarity: {config.itemknn.similarity!r} is not cosine, bm25 or tfidf")
    for name, value in (("ease.l2", config.ease.l2), ("als.regularization", config.als.regularization),
                        ("als.alpha", config.als.alpha), ("rp3beta.alpha", config.rp3beta.alpha),
                        ("ease.max_memory_mb", config.ease.max_memory_mb)):
        if not value > 0:
            problems.append(f"{name}: must be greater than 0")
    for name, value in (("rp3beta.beta", config.rp3beta.beta), ("tuning.budget_seconds", config.tuning.budget_seconds),
                        ("tuning.budget_seconds_per_million", config.tuning.budget_seconds_per_million),
                        ("tuning.publish_tolerance", config.tuning.publish_tolerance),
                        ("events.half_life_days", config.events.half_life_days),
                        ("repeat.half_life_days", config.repeat.half_life_days),
                        ("repeat.cycle_weight", config.repeat.cycle_weight),
                        ("repeat.mix_weight", config.repeat.mix_weight),
                        ("evaluate.test_days", config.evaluate.test_days),
                        ("tuning.min_span_days", config.tuning.min_span_days),
                        ("popularity.half_life_days", config.popularity.half_life_days)):
        if not value >= 0:
            problems.append(f"{name}: must be at least 0")
    for name, value in (("tuning.validation_share", config.tuning.validation_share),
                        ("tuning.cold_share", config.tuning.cold_share)):
        if not 0.0 < value < 1.0:
            problems.append(f"{name}: {value} is not between 0 and 1 (exclusive)")
    if config.hybrid.loss not in ("warp", "bpr", "warp-kos", "logistic"):
        problems.append(f"hybrid.loss: {config.hybrid.loss!r} is not warp, bpr, warp-kos or logistic")
    for name, value in (("coldstart.hybrid_weight", config.coldstart.hybrid_weight),
                        ("related.content_weight", config.related.content_weight)):
        if not 0.0 <= value <= 1.0:
            problems.append(f"{name}: {value} is not between 0 and 1")
    for name, value in (("als.factors", config.als.factors), ("als.iterations", config.als.iterations),
                        ("hybrid.no_components", config.hybrid.no_components), ("hybrid.epochs", config.hybrid.epochs),
                        ("related.neighbours", config.related.neighbours), ("evaluate.k", config.evaluate.k),
                        ("ease.neighbours", config.ease.neighbours), ("rp3beta.neighbours", config.rp3beta.neighbours),
                        ("itemknn.neighbours", config.itemknn.neighbours), ("tuning.max_trials", config.tuning.max_trials),
                        ("tuning.max_validation_users", config.tuning.max_validation_users),
                        ("tuning.min_validation_users", config.tuning.min_validation_users),
                        ("tuning.cold_folds", config.tuning.cold_folds),
                        ("evaluate.max_users", config.evaluate.max_users)):
        if value < 1:
            problems.append(f"{name}: must be at least 1")
    if config.evaluate.temporal_cut:
        try:
            parse_cut(config.evaluate.temporal_cut)
        except ValueError as exc:
            problems.append(f"evaluate.temporal_cut: {exc}")
    problems += _search_problems(config.search)
    bad_protocols = [p for p in config.evaluate.protocols if p not in PROTOCOLS]
    if bad_protocols:
        problems.append(f"evaluate.protocols: unknown {bad_protocols} (choose from {', '.join(PROTOCOLS)})")
    if problems:
        raise ConfigError(f"{where}: " + "; ".join(problems))
    return config


def _search_problems(search: SearchConfig) -> list[str]:
    from vocab.tokenizer import check_analysis  # here: it imports jieba (~0.25 s), which reading a config needs not

    problems = []
    for name, table in (("search.analysis", search.analysis), ("search.field_weights", search.field_weights)):
        unknown = set(table) - set(FIELDS)
        if unknown:
            problems.append(f"{name}: unknown fields {sorted(unknown)} (fields: {', '.join(FIELDS)})")
    for name, analysis in search.analysis.items():
        try:
            check_analysis(analysis, f"search.analysis.{name}")
        except ValueError as exc:
            problems.append(str(exc))
    if any(not isinstance(w, (int, float)) or not w >= 0 for w in search.field_weights.values()):
        problems.append("search.field_weights: weights must be at least 0")
    if not search.k1 >= 0 or not 0 <= search.b <= 1:
        problems.append(f"search: k1 must be at least 0 and b between 0 and 1 (got k1={search.k1}, b={search.b})")
    return problems


def parse_cut(value: str | float) -> float:
    """A cut in time as Unix seconds: a number, or an ISO date / date-time (UTC unless it says)."""
    import datetime as dt

    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{value!r} is neither a date (2001-02-01) nor Unix seconds") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return when.timestamp()


def load_config(path: str | Path | None) -> TrainConfig:
    """Defaults, overridden by the TOML file at `path` if given."""
    config = TrainConfig()
    if path is None:
        return config
    try:
        values = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    _merge(config, values, str(path), config.pinned)
    return check_config(config, str(path))


def config_from_dict(values: dict[str, Any]) -> TrainConfig:
    """Rebuild a config from a manifest's `config` (serving and the publish gate read it back).

    Bundles of format 1 had no `[model]` section: they served ALS."""
    config = TrainConfig()
    _merge(config, values, "manifest.config")
    if "model" not in values:
        config.model.family = "als"
    return config


def defaults_toml() -> str:
    """The default config as commented TOML (a starting point for a config file)."""
    lines: list[str] = []

    def fmt(value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str):
            return f'"{value}"'
        if isinstance(value, list):
            return "[" + ", ".join(fmt(v) for v in value) + "]"
        return repr(value)

    lines += ["# minirec training config. Every value below is the default, commented out: a line you",
              "# uncomment pins that value, and tuning (section [tuning]) searches only what is not pinned.", ""]
    for section in dataclasses.fields(TrainConfig):
        obj = getattr(TrainConfig(), section.name)
        summary = (type(obj).__doc__ or "").strip().splitlines()[0]
        lines += [f"# {summary}", f"[{section.name}]"]
        tables = []
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if isinstance(value, dict):
                tables.append((f, value))
                continue
            lines += [f"# {f.metadata.get('doc', '')}", f"# {f.name} = {fmt(value)}"]
        for f, value in tables:
            lines += ["", f"# {f.metadata.get('doc', '')}", f"[{section.name}.{f.name}]"]
            lines += [f'# "{k}" = {fmt(v)}' for k, v in value.items()]
        lines.append("")
    return "\n".join(lines)
