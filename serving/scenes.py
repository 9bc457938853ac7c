"""Scene rules per app from minirec.toml, over the defaults of `recsys/rules.py`.

    [apps.demo.scenes.home]
    max_per_category = 3      # diversity: at most this many items of one category per page (0 = off)
    max_per_brand = 2         # … and of one brand (0 = off)
    fatigue_impressions = 3   # shown this often without a click → demoted (0 = off)
    fatigue_penalty = 1.0     # demotion, in standard deviations of the scene's scores
    exclude_purchased = true  # drop items the user bought (default: the bundle decides from repeat buying)
    exclude_seen = true       # drop items of the user's training history and of their events since
    pinned = ["i000012"]      # always first, in this order, when eligible
    boosted = { i000034 = 0.5 }  # added to the item's score, in standard deviations

Hidden, out-of-stock and not-eligible (audience) items are always excluded; that is not a choice.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from recsys.rules import DEFAULTS, SCENES, SceneRules

__all__ = ["DEFAULTS", "SCENES", "SceneRules", "parse_scenes"]


def _checked(key: str, value: Any, default: Any, where: str) -> Any:
    """The rule's value in its type, or a TenancyError naming the rule (checked at start, not per request)."""
    from serving.tenancy import TenancyError

    def bad(expected: str) -> TenancyError:
        return TenancyError(f"{where}.{key}: expected {expected}, got {value!r}")

    if key == "pinned":
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise bad("a list of item ids")
        return tuple(value)
    if key == "boosted":
        if not isinstance(value, dict) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value.values()):
            raise bad("a table of item id = number")
        return {str(k): float(v) for k, v in value.items()}
    if isinstance(default, bool) or key == "exclude_purchased":
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise bad("a whole number >= 0")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise bad("a number >= 0")
    return float(value)


def parse_scenes(raw: dict[str, Any], where: str) -> dict[str, SceneRules]:
    """Scene tables over the defaults; unknown scenes or keys and values of the wrong type are errors."""
    from serving.tenancy import TenancyError

    scenes = dict(DEFAULTS)
    known = {f.name for f in dataclasses.fields(SceneRules)}
    for name, table in raw.items():
        if name not in SCENES:
            raise TenancyError(f"{where}: unknown scene '{name}' (known: {', '.join(SCENES)})")
        if not isinstance(table, dict):
            raise TenancyError(f"{where}.{name}: expected a table of rules")
        values = {}
        for key, value in table.items():
            if key not in known:
                raise TenancyError(f"{where}.{name}: unknown rule '{key}' (known: {', '.join(sorted(known))})")
            values[key] = _checked(key, value, getattr(DEFAULTS[name], key), f"{where}.{name}")
        scenes[name] = dataclasses.replace(DEFAULTS[name], **values)
    return scenes
