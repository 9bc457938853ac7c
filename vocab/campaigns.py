"""Campaign ids and the request id of a platform placement, shared by serving (writes) and analytics (reads).

A placement's request id is `<24 hex>.placement.<campaign>`: events the super-app or the
mini-program send with it are credited to the campaign (analytics/campaigns.py). The scene token
`placement` is not a shelf scene, so the scene × variant report never counts these events twice.
"""

from __future__ import annotations

import re
import uuid

PLACEMENT = "placement"
_CAMPAIGN = re.compile(r"^aud_[0-9a-f]{16}$")


def new_campaign_id() -> str:
    """A fresh audience (campaign) id: `aud_` + 16 hex digits."""
    return f"aud_{uuid.uuid4().hex[:16]}"


def is_campaign_id(value: str) -> bool:
    """True if `value` has the form of an audience id."""
    return bool(_CAMPAIGN.match(value))


def placement_request_id(campaign: str) -> str:
    """The request id of one placement of `campaign` (raises ValueError for a malformed id)."""
    if not is_campaign_id(campaign):
        raise ValueError(f"{campaign!r} is not an audience id")
    return f"{uuid.uuid4().hex[:24]}.{PLACEMENT}.{campaign}"
