"""Training configuration: documented defaults, overridable from a TOML file.

Every field's comment is its documentation; `minirec train --print-config` prints the defaults
as TOML, which is also the template for a config file. Unknown keys in a file are errors, so a
typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class EventsConfig:
    #: Confidence weight of each event type in the implicit-feedback matrix (0 = ignored).
    weights: dict[str, float] = field(default_factory=lambda: {
        "impression": 0.0, "view": 1.0, "click": 2.0, "favorite": 4.0, "cart": 6.0, "purchase": 10.0, "rating": 1.0,
    })
    #: Multiply a `rating` event's weight by its value (stars) instead of counting every rating alike.
    use_rating_value: bool = False
    #: Half-life of an event's weight in days, counted back from the newest event (0 = no decay).
    half_life_days: float = 0.0


@dataclass
class ALSConfig:
    """implicit's AlternatingLeastSquares. Defaults tuned on the synthetic mall (README, "Quality"):
    strong regularization matters most; BM25 weighting keeps NDCG and doubles catalog coverage."""

    factors: int = 64
    regularization: float = 10.0
    #: Scale of the (weighted) confidences.
    alpha: float = 1.0
    iterations: int = 15
    #: Confidence weighting before ALS: "bm25", "tfidf" or "none".
    weighting: str = "bm25"
    bm25_k1: float = 3.0
    bm25_b: float = 0.75
    random_state: int = 0


@dataclass
class HybridConfig:
    """LightFM (WARP) with user features from merged profiles and item features from content."""

    no_components: int = 32
    loss: str = "warp"
    epochs: int = 20
    learning_rate: float = 0.05
    item_alpha: float = 1e-6
    user_alpha: float = 1e-6
    max_sampled: int = 10
    #: Add title tokens (jieba for Chinese, words for ASCII) as item features.
    title_tokens: bool = True
    #: Keep a title token only if this many items have it (drops typos and ids).
    min_token_items: int = 2
    #: Price band edges (the app's currency); an item's band is an item feature.
    price_bands: list[float] = field(default_factory=lambda: [10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0])
    #: Weight of the blended segment popularity for users only known by their profile (0..1).
    cold_popularity_weight: float = 0.5
    random_state: int = 0


@dataclass
class PopularityConfig:
    #: Half-life of popularity in days (0 = plain counts).
    half_life_days: float = 7.0
    #: Shrinkage of segment popularity toward global popularity (pseudo-count of interactions).
    segment_shrinkage: float = 50.0
    #: Items kept per category and per segment in the bundle.
    top_n: int = 500


@dataclass
class RelatedConfig:
    #: Neighbours stored per item.
    neighbours: int = 50
    #: Share of the content similarity in the related score of items with interactions (0..1).
    content_weight: float = 0.2


@dataclass
class EvaluateConfig:
    #: Protocols run by `minirec train` for the bundle's report ([] to skip).
    protocols: list[str] = field(default_factory=lambda: ["stratified", "cold-users"])
    k: int = 10
    seed: int = 0


@dataclass
class PlatformConfig:
    #: Consent scope → platform profile columns it covers. A column is used only with its scope.
    scopes: dict[str, list[str]] = field(default_factory=lambda: {
        "basic": ["age_band", "gender", "occupation"],
        "location": ["city_tier", "region"],
        "interests": ["interests"],
    })


@dataclass
class TrainConfig:
    events: EventsConfig = field(default_factory=EventsConfig)
    als: ALSConfig = field(default_factory=ALSConfig)
    hybrid: HybridConfig = field(default_factory=HybridConfig)
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
    return config


def config_from_dict(values: dict[str, Any]) -> TrainConfig:
    """Rebuild a config from a manifest's `config` (serving reads it back)."""
    config = TrainConfig()
    _merge(config, values, "manifest.config")
    return config


def defaults_toml() -> str:
    """The default config as TOML text (a starting point for a config file)."""
    lines: list[str] = []

    def fmt(value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str):
            return f'"{value}"'
        if isinstance(value, list):
            return "[" + ", ".join(fmt(v) for v in value) + "]"
        return repr(value)

    def emit(obj: Any, prefix: str) -> None:
        plain = [(f.name, getattr(obj, f.name)) for f in dataclasses.fields(obj)]
        lines.append(f"[{prefix}]")
        nested = []
        for name, value in plain:
            if dataclasses.is_dataclass(value) or isinstance(value, dict):
                nested.append((name, value))
            else:
                lines.append(f"{name} = {fmt(value)}")
        lines.append("")
        for name, value in nested:
            if isinstance(value, dict):
                lines.append(f"[{prefix}.{name}]")
                lines.extend(f'"{k}" = {fmt(v)}' for k, v in value.items())
                lines.append("")
            else:
                emit(value, f"{prefix}.{name}")

    for f in dataclasses.fields(TrainConfig):
        emit(getattr(TrainConfig(), f.name), f.name)
    return "\n".join(lines)
