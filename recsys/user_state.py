"""What the ranking pipeline knows about one user at request time (read from Redis by the server;
built from a test split's history and profiles by offline evaluation)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class UserState:
    """Everything the request path needs about one user, read in one round trip."""

    recent: list[tuple[str, str, float]]  # (item_id, event type, ts), newest first
    purchased: set[str]  # purchased within the purchased TTL
    shown: dict[str, int]  # item -> impressions since the user last engaged with it
    clicked: set[str]  # items the user engaged with (view, click, favorite, cart, purchase)
    merchant_profile: dict[str, str]
    platform_profile: dict[str, str]
    recent_queries: list[str] = field(default_factory=list)  # newest first
    #: Time of the request (Unix seconds); None = the clock. Offline evaluation sets the split's cut.
    now: float | None = None
