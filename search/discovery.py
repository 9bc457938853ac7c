"""Shading words (the greyed-out default query) and search-discovery chips, from the user's signals.

Both read the same signals: the categories of the user's recent events (Redis), the user's recent
queries (Redis), the strongest categories of a known user's training history (what the models know
before any event of this session), the interests in their profiles (consent applied), and the training log's
query statistics (category → queries people clicked into it, query → queries searched with it).
Hot queries fill in when the user gives us nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from vocab.queries import normalize_query
from recsys.profiles import profile_keys
from recsys.schema import CATEGORY_SEP, LIST_SEP
from recsys.served import ServedModels
from recsys.user_state import UserState
from search.query_log import QueryStats
from search.settings import SearchSettings


@dataclass
class UserSignals:
    """What search personalization knows about one user (all empty for an anonymous visitor)."""

    recent_queries: list[str] = field(default_factory=list)  # newest first, normalized
    categories: list[str] = field(default_factory=list)  # category paths of recent events, most recent first
    interests: list[str] = field(default_factory=list)  # top-level categories from the profiles
    modelled: list[str] = field(default_factory=list)  # category paths of the training history, strongest first

    def top_levels(self) -> list[str]:
        """Top-level categories the user cares about, strongest signal first."""
        tops = [c.split(CATEGORY_SEP, 1)[0] for c in self.categories + self.modelled] + self.interests
        return list(dict.fromkeys(t for t in tops if t))


def user_signals(app: ServedModels, state: UserState | None, user_id: str | None) -> UserSignals:
    """The user's search signals: categories of their recent events (read from the app's live
    catalog), recent queries, consented profile interests, and the strongest categories of a known
    user's training history."""
    modelled = modelled_categories(app, user_id)
    if state is None:
        return UserSignals(modelled=modelled)
    catalog = app.catalog.state
    categories = [catalog.category(pos) for item, _event, _ts in state.recent
                  if (pos := catalog.position(item)) is not None]
    keys = profile_keys(state.merchant_profile, state.platform_profile, app.scopes)
    interests = [value for key in keys for name, _, value in [key.partition("=")]
                 if name.rsplit(".", 1)[-1] == "interests"]
    interests = [v.strip() for value in interests for v in value.split(LIST_SEP) if v.strip()]
    queries = [normalize_query(q) for q in state.recent_queries if q.strip()]
    return UserSignals(list(dict.fromkeys(queries)), list(dict.fromkeys(c for c in categories if c)),
                       list(dict.fromkeys(interests)), modelled)


def modelled_categories(app: ServedModels, user_id: str | None, n: int = 5) -> list[str]:
    """A known user's strongest categories in the training data (the app's own events, weighted as
    the models weigh them), so shading and discovery know them before any event of this session."""
    user = app.models.users.get(user_id) if user_id else None
    if user is None:
        return []
    items, weights = app.models.history(user)
    categories = app.catalog.state.categories
    totals: dict[str, float] = {}
    for item, weight in zip(items.tolist(), weights.tolist()):
        totals[categories[item]] = totals.get(categories[item], 0.0) + weight
    return sorted(totals, key=lambda path: (-totals[path], path))[:n]


def _leaf(path: str) -> str:
    return path.rsplit(CATEGORY_SEP, 1)[-1].strip()


def _first_allowed(candidates: Iterable[str], settings: SearchSettings, avoid: set[str]) -> str | None:
    return next((q for q in candidates if q and q not in avoid and not settings.blocked(q)), None)


def shading(stats: QueryStats, signals: UserSignals, hot: Sequence[str],
            settings: SearchSettings) -> tuple[str, str, str] | None:
    """(query, source, reason) for an empty search box, or None when there is nothing to suggest.

    Order: the category of the user's latest events (the query people search most for it, else its
    name), a query searched together with the user's latest query, the strongest categories of the
    user's training history (known users), the profile's interests, then the hottest query.
    """
    avoid = set(signals.recent_queries[:1])  # do not echo what the user just searched
    for path in signals.categories[:3]:
        query = _first_allowed([*stats.by_category.get(path, []), _leaf(path)], settings, avoid)
        if query:
            return query, "events", f"you looked at {path}"
    for last in signals.recent_queries[:3]:
        query = _first_allowed([p for p, _ in stats.related.get(last, [])], settings, avoid)
        if query:
            return query, "queries", f"searched with {last}"
    for path in signals.modelled[:3]:  # the app's own past events: may be named
        query = _first_allowed([*stats.by_category.get(path, []), _leaf(path)], settings, avoid)
        if query:
            return query, "history", f"you often look at {path}"
    for top in signals.interests:  # from the profiles: used, never named (the platform's are not the app's)
        query = _first_allowed([*stats.by_category.get(top, []), top], settings, avoid)
        if query:
            return query, "profile", "picked for you"
    query = _first_allowed(hot, settings, avoid)
    if query:
        return query, "hot", "hot search"
    return None


def discover(stats: QueryStats, signals: UserSignals, hot: Sequence[str], settings: SearchSettings,
             n: int) -> list[tuple[str, str]]:
    """Up to n (query, reason) chips: queries searched with the user's recent ones, then queries of
    the user's interest categories, then hot queries; never the user's own recent queries."""
    related = [(p, f"searched with {q}") for q in signals.recent_queries[:5] for p, _ in stats.related.get(q, [])]
    own = signals.categories[:5] + signals.modelled[:5] + [
        c.split(CATEGORY_SEP, 1)[0] for c in signals.categories + signals.modelled]
    paths = [(c, f"popular in {c}") for c in own] + [(c, "picked for you") for c in signals.interests]
    by_interest = [(q, why) for c, why in dict.fromkeys(paths) for q in stats.by_category.get(c, [])[:5]]
    hottest = [(q, "hot search") for q in hot]
    seen = set(signals.recent_queries)
    chips: list[tuple[str, str]] = []

    def take(rows: Sequence[tuple[str, str]], limit: int) -> None:
        for query, reason in rows:
            if len(chips) >= limit:
                return
            if query not in seen and not settings.blocked(query):
                seen.add(query)
                chips.append((query, reason))

    take(related, (n + 1) // 2)  # half of the chips from co-occurrence, so interests also show
    take(by_interest, n)
    take(related, n)
    take(hottest, n)
    return chips
