"""Business rules of a scene (home, exclusive, related, search, buy again): what feeds and search
apply after scoring, through the one function here (`apply_rules`, then `page_order`). Servers read
them per app from minirec.toml; offline evaluation ranks through the same pipeline with
`EVALUATION_RULES`.

Hidden, out-of-stock and not-eligible (audience) items are always excluded (the catalog's
`eligible` mask); that is not a choice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from recsys.catalog import CatalogState

T = TypeVar("T")

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


@dataclass(frozen=True)
class UserItems:
    """What the rules need of one user, as catalog positions (`CatalogState`)."""

    #: Items they interacted with: their training history and positive events since.
    seen: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    #: Items they bought: training's purchases and live purchase events.
    purchased: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    #: Impressions since they last engaged, per item.
    shown: dict[int, int] = field(default_factory=dict)
    #: Repurchase candidates the scoring mixed in: spared from the seen / purchased exclusions
    #: unless the scene excludes purchases explicitly.
    repeat: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


def apply_rules(scores: np.ndarray, allowed: np.ndarray, rules: SceneRules, catalog: CatalogState,
                user: UserItems | None, *, unit: float = 1.0) -> np.ndarray:
    """The scene's rules on scores over the catalog's positions: a new array where items not
    `allowed` (eligibility, request filters) and the scene's exclusions are -inf, fatigue and boosts
    move scores by `unit`s (a standard deviation of the scores being ranked). Feeds and search both
    rank through this; it never makes an item that was not allowed eligible."""
    scores = np.asarray(scores, dtype=np.float64)
    out = np.where(allowed, scores, -np.inf)
    if user is not None:
        if rules.exclude_purchased is not False:
            out[user.purchased] = -np.inf
        if rules.exclude_seen:
            out[user.seen] = -np.inf
        if rules.exclude_purchased is not True and len(user.repeat):
            spared = user.repeat[allowed[user.repeat]]
            out[spared] = scores[spared]
        if rules.fatigue_impressions:
            for pos, count in user.shown.items():
                if count >= rules.fatigue_impressions:
                    out[pos] -= rules.fatigue_penalty * unit
    for item_id, boost in rules.boosted.items():
        pos = catalog.position(item_id)
        if pos is not None:
            out[pos] += boost * unit
    return out


def page_order(scores: np.ndarray, rules: SceneRules, catalog: CatalogState, want: int, page_size: int,
               candidates: np.ndarray | None = None) -> tuple[list[int], int]:
    """(positions of the first `want` items, how many of them are pinned): pinned items that still
    have a score first, in the configured order, then best score first (ties by position, so every
    page of one ranking agrees), at most `max_per_category` / `max_per_brand` per page of `page_size`.
    `candidates` (positions) may say where the finite scores can be, to skip scanning the catalog."""
    pinned = []
    for item_id in rules.pinned:
        pos = catalog.position(item_id)
        if pos is not None and np.isfinite(scores[pos]) and pos not in pinned:
            pinned.append(pos)
    rest = scores.copy()
    rest[pinned] = -np.inf
    if candidates is None:
        finite = np.flatnonzero(np.isfinite(rest))
    else:
        finite = candidates[np.isfinite(rest[candidates])]
    pool = max(want * 4, 60)  # enough to fill capped pages; fewer Python objects
    if len(finite) > pool:  # every item tied with the pool's last joins it, so the pool never depends on `want`'s ties
        cut = np.partition(-rest[finite], pool - 1)[pool - 1]
        finite = finite[-rest[finite] <= cut]
    ordered = finite[np.lexsort((finite, -rest[finite]))].tolist()
    left = max(want - len(pinned), 0)
    if rules.max_per_category or rules.max_per_brand:
        categories, brands, n_trained = catalog.categories, catalog.brands, catalog.n_trained

        def keys(pos: int) -> tuple[str, str]:  # read lazily: diversifying stops once the pages are full
            if pos < n_trained:
                return categories[pos], brands[pos]
            return catalog.category(pos), catalog.brand(pos)
        ordered = [ordered[k] for k in diverse_order(ordered, keys, left, page_size, rules)]
    return pinned + ordered[:left], len(pinned)


def diverse_order(candidates: Sequence[T], keys: Callable[[T], tuple[str, str]], want: int, page_size: int,
                  rules: SceneRules) -> list[int]:
    """Positions of the first `want` candidates (best first) in greedy pages of `page_size`: an item
    over its page's category / brand cap (`keys` gives both) waits for the next page."""
    max_cat, max_brand = rules.max_per_category, rules.max_per_brand
    out: list[int] = []
    waiting = list(range(len(candidates)))
    while waiting and len(out) < want:
        per_cat: dict[str, int] = {}
        per_brand: dict[str, int] = {}
        page: list[int] = []
        deferred: list[int] = []
        for position, k in enumerate(waiting):
            if len(page) >= page_size:
                deferred += waiting[position:]
                break
            category, brand = keys(candidates[k])
            if (max_cat and per_cat.get(category, 0) >= max_cat) or (
                    max_brand and brand and per_brand.get(brand, 0) >= max_brand):
                deferred.append(k)
                continue
            per_cat[category] = per_cat.get(category, 0) + 1
            per_brand[brand] = per_brand.get(brand, 0) + 1
            page.append(k)
        if not page:  # only capped items are left: relax rather than return a short page
            page, deferred = deferred[: page_size], deferred[page_size:]
        out += page
        waiting = deferred
    return out[:want]
