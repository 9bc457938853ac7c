"""Business rules per scene (home, exclusive, related, search), configured in minirec.toml.

    [apps.demo.scenes.home]
    max_per_category = 3      # diversity: at most this many items of one category per page (0 = off)
    max_per_brand = 2         # … and of one brand (0 = off)
    fatigue_impressions = 3   # shown this often without a click → demoted (0 = off)
    fatigue_penalty = 1.0     # demotion, in standard deviations of the scene's scores
    exclude_purchased = true  # drop items the user bought (from events and training history)
    pinned = ["i000012"]      # always first, in this order, when eligible
    boosted = { i000034 = 0.5 }  # added to the item's score, in standard deviations

Hidden, out-of-stock and not-eligible (audience) items are always excluded; that is not a choice.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

SCENES = ("home", "exclusive", "related", "search")


@dataclass(frozen=True)
class SceneRules:
    max_per_category: int = 3
    max_per_brand: int = 2
    fatigue_impressions: int = 3
    fatigue_penalty: float = 1.0
    exclude_purchased: bool = True
    pinned: tuple[str, ...] = ()
    boosted: dict[str, float] = field(default_factory=dict)


DEFAULTS: dict[str, SceneRules] = {
    "home": SceneRules(),
    "exclusive": SceneRules(max_per_category=0, max_per_brand=0),
    "related": SceneRules(max_per_category=0, max_per_brand=3),
    # search: the query decides; rules apply only if configured, and a bought item stays findable
    "search": SceneRules(max_per_category=0, max_per_brand=0, fatigue_impressions=0, exclude_purchased=False),
}


def parse_scenes(raw: dict[str, Any], where: str) -> dict[str, SceneRules]:
    """Scene tables over the defaults; unknown scenes or keys are errors."""
    from serving.tenancy import TenancyError

    scenes = dict(DEFAULTS)
    known = {f.name: f for f in dataclasses.fields(SceneRules)}
    for name, table in raw.items():
        if name not in SCENES:
            raise TenancyError(f"{where}: unknown scene '{name}' (known: {', '.join(SCENES)})")
        values = {}
        for key, value in table.items():
            if key not in known:
                raise TenancyError(f"{where}.{name}: unknown rule '{key}' (known: {', '.join(known)})")
            if key == "pinned":
                value = tuple(str(v) for v in value)
            elif key == "boosted":
                value = {str(k): float(v) for k, v in value.items()}
            values[key] = value
        scenes[name] = dataclasses.replace(DEFAULTS[name], **values)
    return scenes
