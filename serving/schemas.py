"""Request and response bodies of the HTTP API (they also make the OpenAPI docs at /docs)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

#: Profile field names: the column names of the data contract; `=` and `|` would break feature keys
#: (`m.member_level=gold`) and multi-valued cells.
FieldName = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f=|]+$")]
FieldValue = Annotated[str, StringConstraints(max_length=256)]
#: Ids and free text: no control characters (they would corrupt logs and Redis list entries).
Text = StringConstraints(pattern=r"^[^\x00-\x1f\x7f]*$")

EVENT_TYPES = ("impression", "view", "click", "favorite", "cart", "purchase", "search")


class ItemOut(BaseModel):
    item_id: str
    score: float = Field(description="The item's final score in this response (higher is better)")
    reason: str = Field(description="Why it is here, short enough for a UI hint")
    title: str
    category: str
    price: float


class Assignment(BaseModel):
    """The user's experiment of this scene, if any (docs/experiments.md)."""

    experiment: str | None = Field(default=None, description="The experiment of this scene the user is in, "
                                                             "or null")
    variant: str | None = Field(default=None, description="The user's variant of it (\"holdout\" in the holdout), "
                                                          "or null")


class RecommendationOut(Assignment):
    request_id: str = Field(description="Send it back with events on these items to credit this response "
                                        "(it names the scene and variant)")
    model_version: str
    strategy: str = Field(description="<model> | <model>+recent | recent | hybrid | popularity | related | "
                                      "related+user, where <model> is the bundle's known-user family: als, ease, "
                                      "rp3beta or itemknn")
    degraded: bool = Field(description="true when the answer skipped the user's real-time features: Redis "
                                       "unreachable, or the server overloaded (then also not personalized)")
    note: str | None = None
    items: list[ItemOut]


class EventIn(BaseModel):
    """One event; validated one by one so that a bad event does not sink its batch."""

    model_config = ConfigDict(allow_inf_nan=False)

    event_id: Annotated[str, Text] = Field(min_length=1, max_length=128,
                                           description="Unique id; a repeated id is ignored")
    user_id: Annotated[str, Text] = Field(min_length=1, max_length=128)
    type: Literal["impression", "view", "click", "favorite", "cart", "purchase", "search"]
    item_id: Annotated[str, Text] | None = Field(default=None, max_length=128)
    query: str | None = Field(default=None, max_length=100)
    ts: float | None = Field(default=None, ge=0, description="Unix seconds; default: when received")
    request_id: Annotated[str, Text] | None = Field(
        default=None, max_length=128, description="The request_id of the response that showed the item (for a "
                                                  "search: of the search response); credits the event to its scene "
                                                  "and variant")
    value: float = Field(default=1.0, ge=0, le=1e6)
    source: Literal["typed", "shading", "discovery", "hot", "suggest"] | None = Field(
        default=None, description="Search events: where the query came from (default typed)")
    amount: float | None = Field(default=None, ge=0, le=1e9,
                                 description="Purchases: the amount paid (default: the item's catalog price)")


class EventsIn(BaseModel):
    events: list[dict] = Field(max_length=1000, description="At most 1000 events per batch")


class Rejected(BaseModel):
    index: int
    reason: str


class EventsOut(BaseModel):
    accepted: int = Field(description="New events applied")
    duplicates: int = Field(description="Events whose event_id was seen before (ignored)")
    rejected: list[Rejected]
    degraded: bool = Field(description="true if Redis was unreachable: events are logged durably but "
                                       "real-time features will not reflect them")


class ProfileIn(BaseModel):
    fields: dict[FieldName, FieldValue] = Field(
        description="Profile fields to set (names up to 64 characters, without `=` or `|`; values up to 256 "
                    "characters); an empty string deletes a field", max_length=100)


class PlatformProfileIn(ProfileIn):
    consent: str | None = Field(default=None, max_length=256,
                                description="Consent scopes, '|'-separated (e.g. basic|interests)")


class ItemIn(BaseModel):
    """Only the fields given change; a field left out keeps its current value."""

    model_config = ConfigDict(allow_inf_nan=False)

    title: str | None = Field(default=None, min_length=1, max_length=200, pattern=r"\S",
                              description="Required for a new item; never blank")
    category: str | None = Field(default=None, min_length=1, max_length=200, pattern=r"\S",
                                 description="Category path (`数码/手机`); required for a new item; never blank")
    brand: str | None = Field(default=None, max_length=100)
    tags: str | None = Field(default=None, max_length=500)
    price: float | None = Field(default=None, ge=0, le=1e9)
    stock: int | None = Field(default=None, ge=0, le=10**9)
    visible: bool | None = None
    audience: str | None = Field(default=None, max_length=200)


class ErrorBody(BaseModel):
    code: str = Field(description="unauthorized, forbidden, not_found, invalid_request, too_large, "
                                  "rate_limited, unavailable, internal, …")
    message: str = Field(description="What was wrong and where")


class ErrorOut(BaseModel):
    """The one shape of every error response."""

    error: ErrorBody


class OkOut(BaseModel):
    ok: bool = True
    degraded: bool = False
