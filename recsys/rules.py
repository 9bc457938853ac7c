"""Business rules of a scene (home, exclusive, related, search): what the ranking pipeline applies
after scoring. Servers read them per app from minirec.toml (`serving/scenes.py`); offline
evaluation ranks through the same pipeline with `EVALUATION_RULES`.

Hidden, out-of-stock and not-eligible (audience) items are always excluded; that is not a choice.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SCENES = ("home", "exclusive", "related", "search", "buy-again")


@dataclass(frozen=True)
class SceneRules:
    #: Diversity: at most this many items of one category per page (0 = off).
    max_per_category: int = 3
    #: … and of one brand (0 = off).
    max_per_brand: int = 2
    #: Shown this often without a click → demoted by `fatigue_penalty` standard deviations (0 = off).
    fatigue_impressions: int = 3
    fatigue_penalty: float = 1.0
    #: Drop items the user bought (purchase events): True, False, or None = the bundle decides — kept
    #: as repurchase candidates where the merchant's data showed that they are bought again
    #: (`repeat.mix_weight` > 0), dropped otherwise.
    exclude_purchased: bool | None = None
    #: Drop items the user already interacted with: their training history and their positive
    #: events since (views, clicks, carts, …): a feed shows what they have not seen yet.
    exclude_seen: bool = True
    #: Always first, in this order, when eligible.
    pinned: tuple[str, ...] = ()
    #: Added to the item's score, in standard deviations.
    boosted: dict[str, float] = field(default_factory=dict)


DEFAULTS: dict[str, SceneRules] = {
    "home": SceneRules(),
    "exclusive": SceneRules(max_per_category=0, max_per_brand=0),
    "related": SceneRules(max_per_category=0, max_per_brand=3),
    # search: the query decides; rules apply only if configured, and a bought item stays findable
    "search": SceneRules(max_per_category=0, max_per_brand=0, fatigue_impressions=0, exclude_purchased=False,
                         exclude_seen=False),
    # buy-again: the user's own past purchases, best repurchase first
    "buy-again": SceneRules(max_per_category=0, max_per_brand=0, fatigue_impressions=0, exclude_purchased=False,
                            exclude_seen=False),
}

#: What offline evaluation ranks with: the home feed's exclusions, without the page-level rules
#: (diversity caps, fatigue, pins and boosts) whose effect the published protocols do not include.
EVALUATION_RULES = SceneRules(max_per_category=0, max_per_brand=0, fatigue_impressions=0)
