"""Response bodies of the search routes (result pages reuse the recommendation shape)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from serving.schemas import Assignment, RecommendationOut


class DirectOut(BaseModel):
    type: str = Field(description="brand | category | item")
    name: str = Field(description="What the query named, as the catalog spells it")
    target: str = Field(description="The brand, the category path, or the item id to open")
    count: int = Field(description="Items behind the target the user may see (1 for an item)")


class SearchOut(RecommendationOut):
    strategy: str = Field(description="bm25 | bm25+<path> (personalized) | fallback+<path>")
    direct: DirectOut | None = Field(default=None, description="Show this target above the results")
    fallback: bool = Field(description="true: the query matched too little; these are items of the "
                                       "categories closest to it")
    total: int = Field(description="Ranked candidates behind all pages (capped)")
    interpreted_as: str | None = Field(default=None, description="What was searched when it differs from the "
                                       "query: pinyin read as words (`hw手机` → `华为 手机`) or a correction")
    corrected_from: str | None = Field(default=None, description="The query as typed, when a typo or a homophone "
                                       "was corrected; items matching it as typed still come first")
    did_you_mean: list[str] = Field(default_factory=list, description="Queries close to this one (by spelling or "
                                    "pinyin) when it matched too little (`fallback: true`)")


class SuggestionOut(BaseModel):
    text: str
    kind: str = Field(description="query | hot | history | brand | category | title")
    score: float


class SuggestOut(BaseModel):
    request_id: str
    model_version: str
    degraded: bool
    suggestions: list[SuggestionOut]


class HotQueryOut(BaseModel):
    query: str
    score: float = Field(description="Time-decayed search count (live) or count in the training log")


class HotOut(BaseModel):
    request_id: str
    model_version: str
    degraded: bool
    source: str = Field(description="live (search events) | training (the training log's popular queries)")
    items: list[HotQueryOut]


class ShadingOut(Assignment):
    request_id: str
    model_version: str
    degraded: bool
    query: str | None = Field(description="Grey default query for the empty box (null: show none)")
    source: str | None = Field(default=None, description="events | queries | history | profile | hot")
    reason: str | None = None


class ChipOut(BaseModel):
    query: str
    reason: str


class DiscoverOut(Assignment):
    request_id: str
    model_version: str
    degraded: bool
    items: list[ChipOut]
