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
units for every path. Items published after training are scored by the hybrid and mapped into those
units; a bundle without a hybrid ranks them as a typical item (the median score), so a new item is
never left out of the feeds that search already finds it in.

Scores cover every position of one catalog snapshot (`recsys/catalog.py`: trained items, then new
ones); the scene's rules (`recsys/rules.py`) then turn the user's eligibility and exclusions into
-inf and order the page, the same way search does.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from recsys.user_state import UserState
from recsys.models import zscore
from recsys.profiles import MERCHANT_NS, profile_keys
from recsys.catalog import CatalogState
from recsys.repeat import MIN_REPEAT_GAP_S
from recsys.rules import SceneRules, UserItems, apply_rules, page_order
from recsys.served import ServedModels

_VERBS = {"view": "viewed", "click": "viewed", "favorite": "saved", "cart": "added to cart",
          "purchase": "bought", "rating": "rated"}


@dataclass
class Scored:
    """Scores over every position of one catalog snapshot, in z units, and how they were made."""

    scores: np.ndarray
    #: The snapshot the scores are for (a concurrent PUT replaces the catalog's, not this one).
    catalog: CatalogState
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
    mixed = np.array(scored.scores, dtype=np.float64)
    mixed[idx] += repeat.settings.mix_weight * scores
    scored.scores, scored.repeat_items = mixed, counts
    scored.strategy += "+repeat"
    return scored


def buy_again_scored(app: ServedModels, user_id: str | None, state: UserState | None) -> Scored:
    """The buy-again shelf: the user's past purchases by repeat score, nothing else (a note says why
    when there are none)."""
    catalog = app.catalog.state
    scores = np.full(len(catalog), -np.inf)
    idx, repeat, counts = past_purchases(app, user_id, state)
    scores[idx] = repeat
    note = None
    if not len(idx):
        note = "no past purchases known for this user" if user_id else "buy again needs a user_id"
    return Scored(scores, catalog, "buy-again", note=note, repeat_items=counts)


def score_user(app: ServedModels, user_id: str | None, state: UserState | None) -> Scored:
    """Pick the scoring path for this user and score every item; past purchases are mixed in when the
    bundle learned to (see the module docstring)."""
    return _mix_repeats(app, user_id, state, _score_path(app, user_id, state))


def _score_path(app: ServedModels, user_id: str | None, state: UserState | None) -> Scored:
    """Pick the scoring path for this user and score every item."""
    models, catalog = app.models, app.catalog.state
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
        return Scored(_with_new_items(app, catalog, zscore(scores), keys), catalog, strategy, seen, keys)
    if keys:
        return Scored(_with_new_items(app, catalog, models.first_visit_scores(keys), keys), catalog, "hybrid",
                      [], keys)
    note = None
    if known is not None and not personal and (user is not None or len(recent_idx)):
        note = getattr(known, "reason", None) or None  # a known user served popularity on purpose
    return Scored(_with_new_items(app, catalog, app.popularity_z, []), catalog, "popularity", note=note)


def _with_new_items(app: ServedModels, catalog: CatalogState, trained: np.ndarray, keys: list[str]) -> np.ndarray:
    """The trained items' scores followed by the new items': the hybrid's, in z units of its catalog
    scores, or without a hybrid the median of the trained items' scores (a typical item)."""
    new = catalog.new
    if not len(new):
        return trained
    hybrid = app.models.hybrid
    if hybrid is not None and new.vectors is not None:
        user = hybrid.key_vector(keys)
        mean, std = hybrid.catalog_moments(user)
        fresh = (new.vectors @ user + new.biases - mean) / max(std, 1e-9)
    else:
        finite = trained[np.isfinite(trained)]
        fresh = np.full(len(new), float(np.median(finite)) if len(finite) else 0.0)
    return np.concatenate([trained, fresh])


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
    cat = scored.catalog
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
            reasons.append(f"because you {_VERBS.get(anchor[1], 'viewed')} {cat.title(anchor[0])}")
        elif segment:
            reasons.append(f"popular in {cat.category(index)} {describe_segment(segment)}")
        else:
            reasons.append(f"popular in {cat.category(index)}")
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


def user_items(app: ServedModels, user_id: str | None, state: UserState | None, catalog: CatalogState,
               rules: SceneRules, repeat: dict[int, int] | None = None) -> UserItems | None:
    """The user's items as the scene's rules need them (only what `rules` use is looked up); None
    when the rules need none or nothing is known of the user."""
    needs_purchases = rules.exclude_purchased is not False
    if (user_id is None and state is None) or not (needs_purchases or rules.exclude_seen or rules.fatigue_impressions):
        return None
    user = app.models.users.get(user_id) if user_id else None
    empty = np.zeros(0, dtype=np.int64)
    seen = purchased = empty
    if rules.exclude_seen:
        weights = app.event_weights
        recent = _positions(catalog, (i for i, event, _ in state.recent if weights.get(event, 0.0) > 0)
                            if state is not None else ())
        seen = np.concatenate([app.models.history(user)[0], recent]) if user is not None else recent
    if needs_purchases:
        purchased = _positions(catalog, state.purchased if state is not None else ())
        # the training's purchases are part of the history `exclude_seen` drops already
        if not rules.exclude_seen and app.models.repeat is not None and user_id:
            bought = app.models.repeat.history(user, state.recent if state else [], app.models.items)[0]
            purchased = np.concatenate([bought, purchased])
    shown: dict[int, int] = {}
    if rules.fatigue_impressions and state is not None:
        for item_id, count in state.shown.items():
            pos = catalog.position(item_id)
            if pos is not None:
                shown[pos] = count
    spared = np.fromiter(repeat, dtype=np.int64, count=len(repeat)) if repeat else empty
    return UserItems(seen, purchased, shown, spared)


def _positions(catalog: CatalogState, item_ids: Iterable[str]) -> np.ndarray:
    found = [pos for i in item_ids if (pos := catalog.position(i)) is not None]
    return np.array(found, dtype=np.int64)


def rank(app: ServedModels, user_id: str | None, state: UserState | None, rules: SceneRules, *, n: int,
         offset: int, category: str | None = None, only_restricted: bool = False,
         scored: Scored | None = None, exclude: np.ndarray | None = None) -> tuple[list[Item], str, str | None]:
    """The page [offset, offset+n) of the ranked feed; returns (items, strategy, note)."""
    scored = scored or score_user(app, user_id, state)
    cat = scored.catalog
    allowed = cat.eligible(state.merchant_profile if state else {})
    if only_restricted:
        allowed &= cat.restricted()
    note = None
    if category:
        members = cat.category_mask(category)
        if members is None:
            note = f"unknown category {category!r}"
            members = np.zeros(len(cat), dtype=bool)
        allowed &= members
    if exclude is not None:
        allowed[exclude] = False
    user = user_items(app, user_id, state, cat, rules, scored.repeat_items)
    scores = apply_rules(scored.scores, allowed, rules, cat, user)
    order, n_pinned = page_order(scores, rules, cat, offset + n, n)
    page = [(k < n_pinned, pos) for k, pos in enumerate(order)][offset:offset + n]
    reasons = iter(_reasons(app, scored, [pos for pin, pos in page if not pin and pos < cat.n_trained]))
    items = []
    for pin, pos in page:
        if pin:
            reason = "featured"
        elif pos >= cat.n_trained:
            reason = f"new in {cat.category(pos)}"
        else:
            reason = next(reasons)
        items.append(Item(cat.item_id(pos), round(float(scores[pos]), 4), reason, cat.title(pos), cat.category(pos),
                          cat.price(pos)))
    return items, scored.strategy, note or scored.note


def related_scored(app: ServedModels, item_id: str, user: Scored | None, user_weight: float = 0.5) -> Scored | None:
    """Scores for the related shelf of `item_id`: its neighbours, re-ranked for the user if given.

    Trained items use the bundle's neighbours; an item published after training uses content
    similarity; an unknown item gives None (the caller falls back to the home feed).
    """
    models, cat = app.models, app.catalog.state  # one snapshot for the whole shelf
    new = cat.new
    n_items = cat.n_trained
    index = models.items.get(item_id)
    if index is not None and models.related is not None:
        neighbours = models.related.neighbours[index]
        sims = models.related.scores[index][neighbours >= 0].astype(np.float64)
        neighbours = neighbours[neighbours >= 0]
        title = cat.title(index)
    elif item_id in new.index and models.content_vectors is not None and new.vectors is not None:
        j = new.index[item_id]
        unit = models.content_vectors / np.maximum(np.linalg.norm(models.content_vectors, axis=1, keepdims=True), 1e-12)
        vec = new.vectors[j] / max(float(np.linalg.norm(new.vectors[j])), 1e-12)
        all_sims = unit @ vec
        k = min(50, n_items)
        neighbours = np.argpartition(-all_sims, k - 1)[:k]
        sims = all_sims[neighbours]
        title = str(new.rows[j]["title"])
    else:
        return None
    scores = np.full(len(cat), -np.inf)
    if len(neighbours):
        scores[neighbours] = zscore(sims) if len(sims) > 1 else 0.0
        if user is not None:
            scores[neighbours] += user_weight * user.scores[neighbours]
    strategy = "related+user" if user is not None else "related"
    return Scored(scores, cat, strategy, anchor_title=title)
