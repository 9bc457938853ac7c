"""A/B experiments per app and scene from minirec.toml: deterministic bucketing and what a variant changes.

    [apps.demo.experiments.home-feed]
    scene = "home"
    holdout = 0.0
    control = "popularity"
    variants.popularity = { share = 0.5, strategy = "popularity" }
    variants.personalized = { share = 0.5, strategy = "personalized" }

docs/experiments.md is the user's documentation; the request_id format that credits events to a
scene and variant is made here too. It sits in vocab/, below serving (which assigns variants and
writes request ids) and analytics (which reads them back from the event log): both must agree on it.
"""

from __future__ import annotations

import hashlib
import math
import re
import uuid
from dataclasses import dataclass
from typing import Any

#: Scenes an experiment can run on (the shelves and the search box's parts).
SCENES = ("home", "exclusive", "related", "search", "shading", "discover")
#: Scenes that appear in request ids (the experiment scenes plus the search box parts without experiments).
REQUEST_SCENES = SCENES + ("suggest", "hot", "buy-again")
STRATEGIES = ("personalized", "popularity")
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_SHELVES = ("home", "exclusive", "related", "search")
#: Variant keys beyond `share`, and the scenes where each has an effect.
_KEYS: dict[str, tuple[str, ...]] = {
    "strategy": SCENES, "max_per_category": _SHELVES, "max_per_brand": _SHELVES, "personal_weight": ("search",)}
HOLDOUT = "holdout"


class ExperimentError(ValueError):
    """An experiment table of minirec.toml is invalid; the message says where."""


@dataclass(frozen=True)
class Variant:
    name: str
    share: float
    strategy: str = "personalized"
    #: Scene rule overrides (diversity), applied over the scene's rules.
    rules: tuple[tuple[str, int], ...] = ()
    personal_weight: float | None = None

    @property
    def popularity(self) -> bool:
        return self.strategy == "popularity"


#: What users outside any experiment (or in the holdout) get: the default path.
DEFAULT = Variant(HOLDOUT, 0.0)


@dataclass(frozen=True)
class Experiment:
    name: str
    scene: str
    variants: tuple[Variant, ...]
    control: str
    holdout: float = 0.0

    def assign(self, user_id: str | None) -> Variant | None:
        """The user's variant (DEFAULT named "holdout" in the holdout); None for anonymous users."""
        if not user_id:
            return None
        point = bucket(self.name, user_id)
        if point < self.holdout:
            return DEFAULT
        edge = self.holdout
        for variant in self.variants:
            edge += variant.share
            if point < edge:
                return variant
        return self.variants[-1]  # shares add up to 1 within rounding


def bucket(experiment: str, user_id: str) -> float:
    """A point in [0, 1), uniform over users and independent between experiments: the first 8 bytes
    of sha256("<experiment>:<user_id>") over 2^64 (the analytics never need to recompute it: the
    variant travels in the request_id)."""
    digest = hashlib.sha256(f"{experiment}:{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64


def request_id(scene: str, variant: Variant | None = None, experiment: Experiment | None = None,
               outcome: str | None = None) -> str:
    """`<24 hex>.<scene>[+<outcome>][.<experiment>.<variant>]` (see docs/experiments.md)."""
    rid = f"{uuid.uuid4().hex[:24]}.{scene}"
    if outcome:
        rid += f"+{outcome}"
    if variant is not None and experiment is not None:
        rid += f".{experiment.name}.{variant.name}"
    return rid


def _number(value: Any, where: str, low: float, high: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value < low or (high is not None and value > high):
        bound = f" and <= {high}" if high is not None else ""
        raise ExperimentError(f"{where}: expected a number >= {low}{bound}, got {value!r}")
    return float(value)


def _variant(name: str, table: Any, scene: str, where: str) -> Variant:
    if not _NAME.match(name) or name == HOLDOUT:
        raise ExperimentError(f"{where}: variant name must be 1-32 of A-Z a-z 0-9 _ - (and not '{HOLDOUT}')")
    if not isinstance(table, dict):
        raise ExperimentError(f"{where}: expected a table like {{ share = 0.5, strategy = \"personalized\" }}")
    for key in table:
        if key != "share" and key not in _KEYS:
            raise ExperimentError(f"{where}: unknown key '{key}' (known: share, {', '.join(_KEYS)})")
        if key in _KEYS and scene not in _KEYS[key]:
            raise ExperimentError(f"{where}.{key}: has no effect on scene '{scene}' "
                                  f"(it applies to {', '.join(_KEYS[key])})")
    if "share" not in table:
        raise ExperimentError(f"{where}: missing 'share'")
    share = _number(table["share"], f"{where}.share", 0.0, 1.0)
    if share == 0:
        raise ExperimentError(f"{where}.share: must be > 0")
    strategy = table.get("strategy", "personalized")
    if strategy not in STRATEGIES:
        raise ExperimentError(f"{where}.strategy: expected one of {', '.join(STRATEGIES)}, got {strategy!r}")
    rules = []
    for key in ("max_per_category", "max_per_brand"):
        if key in table:
            value = table[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ExperimentError(f"{where}.{key}: expected a whole number >= 0, got {value!r}")
            rules.append((key, value))
    weight = _number(table["personal_weight"], f"{where}.personal_weight", 0.0) if "personal_weight" in table else None
    return Variant(name, share, strategy, tuple(rules), weight)


def parse_experiments(raw: Any, where: str) -> dict[str, Experiment]:
    """Experiments by scene; at most one per scene. Raises ExperimentError naming the table and key."""
    if not isinstance(raw, dict):
        raise ExperimentError(f"{where}: expected tables [… .experiments.<name>]")
    by_scene: dict[str, Experiment] = {}
    for name, table in raw.items():
        at = f"{where}.{name}"
        if not _NAME.match(name):
            raise ExperimentError(f"{at}: experiment name must be 1-32 of A-Z a-z 0-9 _ -")
        if not isinstance(table, dict):
            raise ExperimentError(f"{at}: expected a table")
        unknown = set(table) - {"scene", "holdout", "control", "variants"}
        if unknown:
            raise ExperimentError(f"{at}: unknown key(s) {', '.join(sorted(unknown))} "
                                  "(known: scene, holdout, control, variants)")
        scene = table.get("scene")
        if scene not in SCENES:
            raise ExperimentError(f"{at}.scene: expected one of {', '.join(SCENES)}, got {scene!r}")
        if scene in by_scene:
            raise ExperimentError(f"{at}: scene '{scene}' already has experiment '{by_scene[scene].name}' "
                                  "(one experiment per scene)")
        holdout = _number(table.get("holdout", 0.0), f"{at}.holdout", 0.0, 0.99)
        raw_variants = table.get("variants")
        if not isinstance(raw_variants, dict) or len(raw_variants) < 2:
            raise ExperimentError(f"{at}.variants: expected at least two variants")
        variants = tuple(_variant(v, t, scene, f"{at}.variants.{v}") for v, t in raw_variants.items())
        total = holdout + sum(v.share for v in variants)
        if abs(total - 1.0) > 1e-6:
            raise ExperimentError(f"{at}: holdout + variant shares add up to {total:g}, not 1")
        control = table.get("control", variants[0].name)
        if control not in {v.name for v in variants}:
            raise ExperimentError(f"{at}.control: {control!r} is not one of its variants")
        by_scene[scene] = Experiment(name, scene, variants, control, holdout)
    return by_scene
