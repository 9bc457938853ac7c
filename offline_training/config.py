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
class ALSConfig:
    """implicit's AlternatingLeastSquares for users and items seen in training.

    Defaults tuned on the synthetic mall (README, "Quality"): strong regularization matters most;
    BM25 weighting keeps NDCG and doubles catalog coverage there."""

    factors: int = doc(64, "Latent factors.")
    regularization: float = doc(10.0, "L2 regularization (implicit's default 0.01 overfits badly here).")
    alpha: float = doc(1.0, "Scale of the (weighted) confidences.")
    iterations: int = doc(15, "ALS sweeps.")
    weighting: str = doc("bm25", 'Confidence weighting before ALS: "bm25", "tfidf" or "none".')
    bm25_k1: float = doc(3.0, "BM25 K1 of the weighting.")
    bm25_b: float = doc(0.75, "BM25 B of the weighting.")
    random_state: int = doc(0, "Seed of the factor initialization.")


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

    hybrid_weight: float = doc(1.0, "Share of the hybrid in the blend; the rest is profile-neighbour popularity (0..1). "
                                    "1.0 suits profiles with interests (synthetic mall), 0.0 demographics only (MovieLens).")
    fields: list[str] = doc([], "Profile fields of the neighbour kernel (e.g. p.age_band); [] = every single-valued field.")
    field_weights: dict[str, float] = doc({}, "Match weight w_f of categorical fields (default 1.0).")
    power: float = doc(1.5, "Sharpness p of the neighbour weights.")
    bandwidth_scale: float = doc(0.75, "Bandwidth of numeric fields (age bands, tiers) in standard deviations.")


@dataclass
class PopularityConfig:
    """Global, per-category and per-segment popularity."""

    half_life_days: float = doc(7.0, "Half-life of popularity in days (0 = plain counts).")
    segment_shrinkage: float = doc(50.0, "Pseudo-count pulling a segment's popularity toward global popularity.")


@dataclass
class RelatedConfig:
    """Related items of the detail page."""

    neighbours: int = doc(50, "Neighbours stored per item.")
    content_weight: float = doc(0.2, "Share of content similarity in the related score (0..1).")


@dataclass
class EvaluateConfig:
    """The evaluation `minirec train` runs for the bundle's report."""

    protocols: list[str] = doc(["stratified", "cold-users"], "Protocols to run ([] to skip).")
    k: int = doc(10, "Cut-off of the metrics.")
    seed: int = doc(0, "Seed of the splits.")


@dataclass
class PlatformConfig:
    """Consent scopes of the platform profile."""

    scopes: dict[str, list[str]] = doc(
        {"basic": ["age_band", "gender", "occupation"], "location": ["city_tier", "region"], "interests": ["interests"]},
        "Consent scope → the platform profile columns it covers; a column is used only with its scope.")


@dataclass
class TrainConfig:
    events: EventsConfig = field(default_factory=EventsConfig)
    als: ALSConfig = field(default_factory=ALSConfig)
    hybrid: HybridConfig = field(default_factory=HybridConfig)
    coldstart: ColdStartConfig = field(default_factory=ColdStartConfig)
    popularity: PopularityConfig = field(default_factory=PopularityConfig)
    related: RelatedConfig = field(default_factory=RelatedConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    platform: PlatformConfig = field(default_factory=PlatformConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def scope_map(self) -> dict[str, tuple[str, ...]]:
        return {scope: tuple(cols) for scope, cols in self.platform.scopes.items()}


class ConfigError(ValueError):
    """A config file is unreadable or has unknown keys or wrong types."""


def _merge(obj: Any, values: dict[str, Any], where: str) -> None:
    known = {f.name: f for f in dataclasses.fields(obj)}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"{where}: unknown key '{key}' (known: {', '.join(sorted(known))})")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}.{key}: expected a table")
            _merge(current, value, f"{where}.{key}")
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
    from offline_training.schema import EVENT_TYPES
    from offline_training.splits import PROTOCOLS

    problems = []
    unknown_events = set(config.events.weights) - set(EVENT_TYPES)
    if unknown_events:
        problems.append(f"events.weights: unknown event types {sorted(unknown_events)}")
    if any(w < 0 for w in config.events.weights.values()):
        problems.append("events.weights: weights must be >= 0")
    if config.als.weighting not in ("bm25", "tfidf", "none"):
        problems.append(f"als.weighting: {config.als.weighting!r} is not bm25, tfidf or none")
    if config.hybrid.loss not in ("warp", "bpr", "warp-kos", "logistic"):
        problems.append(f"hybrid.loss: {config.hybrid.loss!r} is not warp, bpr, warp-kos or logistic")
    for name, value in (("coldstart.hybrid_weight", config.coldstart.hybrid_weight),
                        ("related.content_weight", config.related.content_weight)):
        if not 0.0 <= value <= 1.0:
            problems.append(f"{name}: {value} is not between 0 and 1")
    for name, value in (("als.factors", config.als.factors), ("als.iterations", config.als.iterations),
                        ("hybrid.no_components", config.hybrid.no_components), ("hybrid.epochs", config.hybrid.epochs),
                        ("related.neighbours", config.related.neighbours), ("evaluate.k", config.evaluate.k)):
        if value < 1:
            problems.append(f"{name}: must be at least 1")
    bad_protocols = [p for p in config.evaluate.protocols if p not in PROTOCOLS]
    if bad_protocols:
        problems.append(f"evaluate.protocols: unknown {bad_protocols} (choose from {', '.join(PROTOCOLS)})")
    if problems:
        raise ConfigError(f"{where}: " + "; ".join(problems))
    return config


def load_config(path: str | Path | None) -> TrainConfig:
    """Defaults, overridden by the TOML file at `path` if given."""
    config = TrainConfig()
    if path is None:
        return config
    try:
        values = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    _merge(config, values, str(path))
    return check_config(config, str(path))


def config_from_dict(values: dict[str, Any]) -> TrainConfig:
    """Rebuild a config from a manifest's `config` (serving reads it back)."""
    config = TrainConfig()
    _merge(config, values, "manifest.config")
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
            lines += [f"# {f.metadata.get('doc', '')}", f"{f.name} = {fmt(value)}"]
        for f, value in tables:
            lines += ["", f"# {f.metadata.get('doc', '')}", f"[{section.name}.{f.name}]"]
            lines += [f'"{k}" = {fmt(v)}' for k, v in value.items()]
        lines.append("")
    return "\n".join(lines)
