"""The ranking pipeline: candidates → scores → rules → diversity → page, with a reason per item.

The server ranks every feed through it, and offline evaluation and `minirec demo` rank through it
too, so what evaluation measures is what the API serves.

Scoring paths (the response's `strategy`; `<model>` is the bundle's known-user family: als, ease,
rp3beta or itemknn):
- `<model>`: the user is in the model and has no newer events;
- `<model>+recent`: a trained user whose recent events (Redis) are folded in (ALS: a fresh vector;
  item-item models: history × W);
- `recent`: a user unknown to the model with events since training, folded in the same way;
- `hybrid`: no events, but a merchant or platform profile: LightFM + profile-neighbour popularity;
- `popularity`: nothing known, or a bundle whose personalized models did not beat popularity on
  validation (then the note says so).
A path whose user has past purchases gets `+repeat` when the bundle mixes repurchases into the home
feed (`repeat.mix_weight` > 0, learned on the merchant's future): their repeat scores are added and
they are spared from the exclusions of seen and purchased items (`recsys/repeat.py`); the buy-again
shelf ranks those past purchases alone.
Scores of a path are z-scored over the catalog so that rules (fatigue, boosts) work in the same
units for every path, and items published after training are scored by the hybrid and mapped into
those units.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from recsys.user_state import UserState
from recsys.models import zscore
from recsys.profiles import MERCHANT_NS, profile_keys
from recsys.catalog import NewItems, ServingCatalog
from recsys.repeat import MIN_REPEAT_GAP_S
from recsys.rules import SceneRules
from recsys.served import ServedModels

T = TypeVar("T")
_VERBS = {"view": "viewed", "click": "viewed", "favorite": "saved", "cart": "added to cart",
          "purchase": "bought", "rating": "rated"}


@dataclass
class Scored:
    """Scores over the catalog and the overlay of new items, in z units, and how they were made."""

    catalog: np.ndarray
    new: np.ndarray
    #: The overlay of new items `new` scores (one snapshot: a concurrent PUT replaces the catalog's).
    new_items: NewItems
    strategy: str
    #: Item indices (and the event) the user's vector came from, for "because you viewed X".
    history: list[tuple[int, str]] = field(default_factory=list)
    profile_keys: list[str] = field(default_factory=list)
    #: Title of the item a related shelf is for.
    anchor_title: str | None = None
    #: Why this path was taken when it is not the obvious one (shown as the response's note).
    note: str | None = None
    #: Past purchases mixed in as repurchase candidates (spared from the seen / purchased exclusions),
    #: and how often each was bought (for the reason).
    repeat_items: dict[int, int] = field(default_factory=dict)


@dataclass
class Item:
    item_id: str
    score: float
    reason: str
    title: str
    category: str
    price: float


def _recent_items(app: ServedModels, state: UserState | None) -> tuple[np.ndarray, np.ndarray, list[tuple[int, str]]]:
    """Catalog indices and confidences of the user's recent events (newest first)."""
    if state is None or not state.recent:
        return np.zeros(0, dtype=np.int64), np.zeros(0), []
    weights = app.event_weights
    idx, conf, seen = [], [], []
    for item_id, event, _ts in state.recent:
        i = app.models.items.get(item_id)
        w = weights.get(event, 0.0)
        if i is not None and w > 0:
            idx.append(i)
            conf.append(w)
            seen.append((i, event))
    return np.array(idx, dtype=np.int64), np.array(conf, dtype=np.float64), seen


def past_purchases(app: ServedModels, user_id: str | None, state: UserState | None, min_gap_s: float = 0.0
                   ) -> tuple[np.ndarray, np.ndarray, dict[int, int]]:
    """(item indices, repeat scores, purchase counts) of the user's own past purchases: training's and
    those among their live events since, scored at the request's time (`state.now`, or the clock);
    `min_gap_s` leaves out those bought more recently than that."""
    repeat = app.models.repeat
    if repeat is None or not user_id:
        return np.zeros(0, dtype=np.int64), np.zeros(0), {}
    user = app.models.users.get(user_id)
    idx, count, last = repeat.history(user, state.recent if state else [], app.models.items)
    if not len(idx):
        return idx, np.zeros(0), {}
    now = state.now if state is not None and state.now is not None else time.time()
    if min_gap_s > 0:
        keep = now - last >= min_gap_s
        idx, count, last = idx[keep], count[keep], last[keep]
    return idx, repeat.scores(idx, count, last, now), dict(zip(idx.tolist(), count.astype(int).tolist()))


def _mix_repeats(app: ServedModels, user_id: str | None, state: UserState | None, scored: Scored) -> Scored:
    """Add `repeat.mix_weight` × repeat score to the user's past purchases (the home feed's repurchases)."""
    repeat = app.models.repeat
    if repeat is None or repeat.settings.mix_weight <= 0:
        return scored
    idx, scores, counts = past_purchases(app, user_id, state, min_gap_s=MIN_REPEAT_GAP_S)
    if not len(idx):
        return scored
    mixed = np.array(scored.catalog, dtype=np.float64)
    mixed[idx] += repeat.settings.mix_weight * scores
    scored.catalog, scored.repeat_items = mixed, counts
    scored.strategy += "+repeat"
    return scored


def buy_again_scored(app: ServedModels, user_id: str | None, state: UserState | None) -> Scored:
    """The buy-again shelf: the user's past purchases by repeat score, nothing else (a note says why
    when there are none)."""
    new = app.catalog.new
    scores = np.full(len(app.catalog.ids), -np.inf)
    idx, repeat, counts = past_purchases(app, user_id, state)
    scores[idx] = repeat
    note = None
    if not len(idx):
        note = "no past purchases known for this user" if user_id else "buy again needs a user_id"
    return Scored(scores, np.full(len(new.ids), -np.inf), new, "buy-again", note=note, repeat_items=counts)


def score_user(app: ServedModels, user_id: str | None, state: UserState | None) -> Scored:
    """Pick the scoring path for this user and score every item; past purchases are mixed in when the
    bundle learned to (see the module docstring)."""
    return _mix_repeats(app, user_id, state, _score_path(app, user_id, state))


def _score_path(app: ServedModels, user_id: str | None, state: UserState | None) -> Scored:
    """Pick the scoring path for this user and score every item."""
    models = app.models
    user = models.users.get(user_id) if user_id else None
    recent_idx, recent_conf, recent_seen = _recent_items(app, state)
    keys = profile_keys(state.merchant_profile, state.platform_profile, app.scopes) if state else []
    known = models.known
    personal = known is not None and known.family != "popularity"
    if personal and (user is not None or len(recent_idx)):
        past, past_conf = models.history(user) if user is not None else (np.zeros(0, dtype=np.int64), np.zeros(0))
        if len(recent_idx):
            scores = known.history_scores(np.concatenate([past, recent_idx]), np.concatenate([past_conf, recent_conf]))
            strategy = f"{known.family}+recent" if user is not None else "recent"
        else:
            scores = known.user_scores(np.array([user]), models.user_items)[0]
            strategy = known.family
        seen = recent_seen + [(i, "view") for i in past[:50].tolist()]
        return Scored(zscore(scores), *_new_item_scores(app, keys), strategy, seen, keys)
    if keys:
        return Scored(models.first_visit_scores(keys), *_new_item_scores(app, keys), "hybrid", [], keys)
    note = None
    if known is not None and not personal and (user is not None or len(recent_idx)):
        note = getattr(known, "reason", None) or None  # a known user served popularity on purpose
    return Scored(app.popularity_z, *_new_item_scores(app, []), "popularity", note=note)


def _new_item_scores(app: ServedModels, keys: list[str]) -> tuple[np.ndarray, NewItems]:
    """Hybrid scores of items published after training, in z units of the hybrid's catalog scores,
    and the overlay snapshot they score."""
    new = app.catalog.new
    hybrid = app.models.hybrid
    if not new.ids or hybrid is None:
        return np.full(len(new.ids), -np.inf), new
    user = hybrid.key_vector(keys)
    mean, std = hybrid.catalog_moments(user)
    fresh = new.vectors @ user + new.biases
    return (fresh - mean) / max(std, 1e-9), new


def _anchors(app: ServedModels, scored: Scored, indices: list[int]) -> dict[int, tuple[int, str]]:
    """For each item, the history item closest to it in the model's eyes (one call for the whole page)."""
    known = app.models.known
    if not indices or not scored.history or known is None or scored.strategy in ("hybrid", "popularity"):
        return {}
    hist = np.array([i for i, _ in scored.history[:50]])
    affinity = known.item_affinity(np.array(indices), hist)
    best = np.argmax(affinity, axis=1)
    has = affinity[np.arange(len(indices)), best] > 0
    return {index: scored.history[int(b)] for index, b, ok in zip(indices, best, has) if ok}


def _reasons(app: ServedModels, scored: Scored, indices: list[int]) -> list[str]:
    """The reason for each catalog item of a page."""
    cat = app.catalog
    if scored.anchor_title is not None:
        return [f"related to {scored.anchor_title}"] * len(indices)
    anchors = _anchors(app, scored, indices)
    segments: list[str | None] = [None] * len(indices)
    if scored.strategy == "hybrid" and scored.profile_keys:
        segments = app.models.popularity.top_segment_keys(scored.profile_keys, np.array(indices, dtype=np.int64))
    reasons = []
    for index, segment in zip(indices, segments):
        anchor = anchors.get(index)
        bought = scored.repeat_items.get(index)
        if bought:
            reasons.append("you bought this before" if bought == 1 else f"you bought this {bought} times")
        elif anchor is not None and anchor[0] != index:
            reasons.append(f"because you {_VERBS.get(anchor[1], 'viewed')} {cat.titles[anchor[0]]}")
        elif segment:
            reasons.append(f"popular in {cat.categories[index]} {describe_segment(segment)}")
        else:
            reasons.append(f"popular in {cat.categories[index]}")
    return reasons


def describe_segment(key: str) -> str:
    """The reason's words for a profile segment. The platform's profile may be used to rank but is
    never shown to the merchant, so its segments read "with people like you"; the app's own profile
    fields may be named: `m.member_level=gold` → "for your member level (gold)"."""
    name, _, value = key.partition("=")
    namespace, _, column = name.partition(".")
    if namespace != MERCHANT_NS:
        return "with people like you"
    return f"for your {column.replace('_', ' ')} ({value})"


def rank(app: ServedModels, user_id: str | None, state: UserState | None, rules: SceneRules, *, n: int,
         offset: int, category: str | None = None, only_restricted: bool = False,
         scored: Scored | None = None, exclude: np.ndarray | None = None) -> tuple[list[Item], str, str | None]:
    """The page [offset, offset+n) of the ranked feed; returns (items, strategy, note)."""
    cat = app.catalog
    scored = scored or score_user(app, user_id, state)
    scores = np.array(scored.catalog, dtype=np.float64)  # a copy: the rules below change it
    merchant = state.merchant_profile if state else {}
    eligible, restricted = cat.audience_masks(merchant)
    allowed = cat.available & eligible
    if only_restricted:
        allowed &= restricted
    note = None
    if category:
        members = cat.category_items(category)
        if members is None:
            note = f"unknown category {category!r}"
            members = np.zeros(0, dtype=np.int64)
        in_category = np.zeros(len(scores), dtype=bool)
        in_category[members] = True
        allowed &= in_category
    if exclude is not None:
        allowed[exclude] = False
    user = app.models.users.get(user_id) if user_id else None
    # repurchase candidates stay unless the scene's rules exclude purchases explicitly
    spared = allowed.copy() if scored.repeat_items and rules.exclude_purchased is not True else None
    if rules.exclude_purchased is not False and state is not None:
        for item_id in state.purchased:
            i = app.models.items.get(item_id)
            if i is not None:
                allowed[i] = False
    if rules.exclude_seen:
        if user is not None:
            allowed[app.models.history(user)[0]] = False
        weights = app.event_weights
        for item_id, event, _ts in state.recent if state is not None else ():
            i = app.models.items.get(item_id)
            if i is not None and weights.get(event, 0.0) > 0:
                allowed[i] = False
    if spared is not None:
        keep = np.fromiter(scored.repeat_items, dtype=np.int64, count=len(scored.repeat_items))
        allowed[keep] = spared[keep]
    if rules.fatigue_impressions and state is not None:
        for item_id, count in state.shown.items():
            i = app.models.items.get(item_id)
            if i is not None and count >= rules.fatigue_impressions:
                scores[i] -= rules.fatigue_penalty
    for item_id, boost in rules.boosted.items():
        i = app.models.items.get(item_id)
        if i is not None:
            scores[i] += boost
    scores[~allowed] = -np.inf

    # merge the overlay of new items (not in the category index: matched by their path)
    new = scored.new_items
    new_scores = scored.new.copy()
    if len(new_scores):
        ok = new.available() & new.eligible(merchant)  # a member-only new item is for its audience only
        if category:
            prefix = category.strip().strip("/")
            ok &= np.array([str(r["category"]) == prefix or str(r["category"]).startswith(prefix + "/")
                            for r in new.rows], dtype=bool)
        if only_restricted:
            ok &= np.array([bool(r["audience"]) for r in new.rows], dtype=bool)
        new_scores[~ok] = -np.inf

    want = offset + n
    order = _ordered_candidates(scores, new_scores, want, n, rules, cat, new)
    page = order[offset:want]
    reasons = iter(_reasons(app, scored, [index for source, index, _ in page if source == "item"]))
    items = []
    for source, index, score in page:
        if source == "pin":
            items.append(_catalog_item(app, index, score, "featured"))
        elif source == "new":
            row = new.rows[index]
            items.append(Item(new.ids[index], round(float(score), 4), f"new in {row['category']}",
                              str(row["title"]), str(row["category"]), float(row["price"] or 0)))
        else:
            items.append(_catalog_item(app, index, score, next(reasons)))
    return items, scored.strategy, note or scored.note


def _catalog_item(app: ServedModels, index: int, score: float, reason: str) -> Item:
    cat = app.catalog
    return Item(cat.ids[index], round(score, 4), reason, cat.titles[index], cat.categories[index],
                float(cat.prices[index]))


def _ordered_candidates(scores: np.ndarray, new_scores: np.ndarray, want: int, page_size: int,
                        rules: SceneRules, cat: ServingCatalog, new: NewItems) -> list[tuple[str, int, float]]:
    """Pinned items first, then best scores, with at most K per category / brand in each page of n."""
    pinned = []
    for item_id in rules.pinned:
        i = cat.models.items.get(item_id)
        if i is not None and np.isfinite(scores[i]):
            pinned.append(("pin", i, float(scores[i])))
            scores[i] = -np.inf
    pool = min(len(scores), max(want * 4, 60))  # enough to fill capped pages; fewer Python objects
    top = np.argpartition(-scores, pool - 1)[:pool] if pool < len(scores) else np.arange(len(scores))
    top = top[np.argsort(-scores[top], kind="stable")]
    top = top[np.isfinite(scores[top])]
    merged = [("item", i, s) for i, s in zip(top.tolist(), scores[top].tolist())]
    fresh = [("new", j, s) for j, s in enumerate(new_scores.tolist()) if math.isfinite(s)]
    if fresh:
        merged = sorted(merged + fresh, key=lambda c: -c[2])
    if not (rules.max_per_category or rules.max_per_brand):
        return pinned + merged[: max(want - len(pinned), 0)]
    return pinned + _diversify(merged, want - len(pinned), page_size, rules, cat, new)


def _diversify(candidates: list[tuple[str, int, float]], want: int, page_size: int, rules: SceneRules,
               cat: ServingCatalog, new: NewItems) -> list[tuple[str, int, float]]:
    """The candidates in diversified order (see `diverse_order`)."""
    def keys(c: tuple[str, int, float]) -> tuple[str, str]:
        if c[0] == "new":
            row = new.rows[c[1]]
            return str(row["category"]), str(row["brand"])
        return cat.categories[c[1]], cat.brands[c[1]]

    return [candidates[k] for k in diverse_order(candidates, keys, want, page_size, rules)]


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


def related_scored(app: ServedModels, item_id: str, user: Scored | None, user_weight: float = 0.5) -> Scored | None:
    """Scores for the related shelf of `item_id`: its neighbours, re-ranked for the user if given.

    Trained items use the bundle's neighbours; an item published after training uses content
    similarity; an unknown item gives None (the caller falls back to the home feed).
    """
    models, cat = app.models, app.catalog
    new = cat.new  # one snapshot of the overlay for the whole shelf
    n_items = len(cat.ids)
    index = models.items.get(item_id)
    if index is not None and models.related is not None:
        neighbours = models.related.neighbours[index]
        sims = models.related.scores[index][neighbours >= 0].astype(np.float64)
        neighbours = neighbours[neighbours >= 0]
        title = str(cat.titles[index])
    elif item_id in new.ids and models.content_vectors is not None:
        j = new.ids.index(item_id)
        unit = models.content_vectors / np.maximum(np.linalg.norm(models.content_vectors, axis=1, keepdims=True), 1e-12)
        vec = new.vectors[j] / max(float(np.linalg.norm(new.vectors[j])), 1e-12)
        all_sims = unit @ vec
        k = min(50, n_items)
        neighbours = np.argpartition(-all_sims, k - 1)[:k]
        sims = all_sims[neighbours]
        title = str(new.rows[j]["title"])
    else:
        return None
    scores = np.full(n_items, -np.inf)
    if len(neighbours):
        scores[neighbours] = zscore(sims) if len(sims) > 1 else 0.0
        if user is not None:
            scores[neighbours] += user_weight * user.catalog[neighbours]
    strategy = "related+user" if user is not None else "related"
    return Scored(scores, np.full(len(new.ids), -np.inf), new, strategy, anchor_title=title)
