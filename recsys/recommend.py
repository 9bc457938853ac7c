"""The shelves as the API serves them — home feed, exclusive shelf, related items, buy again — on top of the
ranking pipeline. The routes, `minirec demo` and the tests all call these, so what the demo prints
is what the server returns."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recsys.pipeline import Item, Scored, buy_again_scored, rank, related_scored, score_user
from recsys.rules import SceneRules
from recsys.served import ServedModels
from recsys.user_state import UserState


@dataclass(frozen=True)
class Page:
    items: list[Item]
    #: The scoring path (see `recsys.pipeline`).
    strategy: str
    note: str | None = None


def _scored(served: ServedModels, user_id: str | None, state: UserState | None, personalized: bool) -> Scored:
    """The user's scores, or (an experiment's popularity variant) what an anonymous visitor gets;
    either way the scene's rules still see the user's state (eligibility, exclusions)."""
    return score_user(served, user_id if personalized else None, state if personalized else None)


def home_feed(served: ServedModels, user_id: str | None, state: UserState | None, rules: SceneRules, *,
              n: int, offset: int = 0, category: str | None = None, personalized: bool = True) -> Page:
    """The personalized home feed: every available item the user may see, best first."""
    items, strategy, note = rank(served, user_id, state, rules, n=n, offset=offset, category=category,
                                 scored=_scored(served, user_id, state, personalized))
    return Page(items, strategy, note)


def exclusive_feed(served: ServedModels, user_id: str | None, state: UserState | None, rules: SceneRules, *,
                   n: int, offset: int = 0, personalized: bool = True) -> Page:
    """Items with an audience that the user is eligible for (member-only offers), best first."""
    items, strategy, note = rank(served, user_id, state, rules, n=n, offset=offset, only_restricted=True,
                                 scored=_scored(served, user_id, state, personalized))
    if not items and note is None:
        note = "no member-only items this user is eligible for"
    return Page(items, strategy, note)


def related_shelf(served: ServedModels, item_id: str, user_id: str | None, state: UserState | None,
                  rules: SceneRules, *, n: int, offset: int = 0, personalized: bool = True) -> Page:
    """Items related to `item_id`, re-ranked for the user if known (and `personalized`); an unknown
    item gets the user's home feed instead (with a note), never an error."""
    user = score_user(served, user_id, state) if user_id and personalized else None
    scored = related_scored(served, item_id, user)
    note = None
    if scored is None:  # unknown item: the user's own feed is the best shelf we have
        scored = user or score_user(served, None, None)
        note = f"unknown item {item_id!r}: showing the home feed instead"
    anchor = served.models.items.get(item_id)
    exclude = np.array([anchor]) if anchor is not None else None
    items, strategy, rank_note = rank(served, user_id, state, rules, n=n, offset=offset, scored=scored,
                                      exclude=exclude)
    return Page([i for i in items if i.item_id != item_id], strategy, note or rank_note)


def buy_again_shelf(served: ServedModels, user_id: str | None, state: UserState | None, rules: SceneRules, *,
                    n: int, offset: int = 0) -> Page:
    """The user's own past purchases (training's and since), most likely to be bought again first;
    an unknown user or one with no purchases gets an empty page with a note, never an error."""
    scored = buy_again_scored(served, user_id, state)
    items, strategy, note = rank(served, user_id, state, rules, n=n, offset=offset, scored=scored)
    return Page(items, strategy, note)
