"""The data folder contract: which tables exist, their columns and what each column means.

This module is the single source of truth for the contract; the README's column table is written
from it (`minirec data schema` prints it) and validation reads it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: Interaction event types, weakest to strongest signal. `rating` is an explicit rating (value = stars).
EVENT_TYPES: tuple[str, ...] = ("impression", "view", "click", "favorite", "cart", "purchase", "rating")

#: Separator of multi-valued cells (tags, consent scopes, platform interests).
LIST_SEP = "|"

#: Separator of category path levels (`数码/手机`).
CATEGORY_SEP = "/"


@dataclass(frozen=True)
class Column:
    """One column of a table: its type, whether it must be present, and what it means."""

    name: str
    kind: str  # "str" | "int" | "float" | "bool" | "ts" | "event"
    required: bool
    doc: str
    default: object = None


@dataclass(frozen=True)
class Table:
    """One table of the data folder (`<name>.parquet` or `<name>.csv`)."""

    name: str
    doc: str
    columns: tuple[Column, ...]
    required: bool = True
    #: Profiles accept any further columns (profile fields); other tables reject unknown columns.
    open_columns: bool = False
    key: tuple[str, ...] = field(default_factory=tuple)

    def column(self, name: str) -> Column | None:
        return next((c for c in self.columns if c.name == name), None)


ITEMS = Table(
    name="items",
    doc="The app's catalog, one row per item.",
    key=("item_id",),
    columns=(
        Column("item_id", "str", True, "Unique item id (string)."),
        Column("title", "str", True, "Display title, Chinese and/or English."),
        Column("category", "str", True, "Category path, levels separated by `/` (e.g. `数码/手机`)."),
        Column("brand", "str", False, "Brand name; empty if none.", ""),
        Column("tags", "str", False, "Tags separated by `|` (e.g. `新品|包邮`).", ""),
        Column("price", "float", False, "Price in the app's currency, >= 0.", 0.0),
        Column("stock", "int", False, "Units in stock, >= 0; 0 means out of stock.", 1),
        Column("visible", "bool", False, "false hides the item everywhere (true/false, 1/0).", True),
        Column(
            "audience",
            "str",
            False,
            "Who may see the item: empty for everyone, or `field:v1|v2` matched against the "
            "merchant profile (e.g. `member_level:gold|platinum`).",
            "",
        ),
    ),
)

INTERACTIONS = Table(
    name="interactions",
    doc="What users did with items.",
    columns=(
        Column("user_id", "str", True, "User id: the platform-wide id the super-app passes to every mini-program."),
        Column("item_id", "str", True, "Item id; must exist in `items`."),
        Column("event", "event", True, "One of " + ", ".join(EVENT_TYPES) + "."),
        Column("ts", "ts", True, "When: Unix seconds or ISO 8601 (`2026-11-01T12:30:00Z`)."),
        Column("value", "float", False, "Strength: stars for `rating`, quantity for `purchase`; default 1.", 1.0),
    ),
)

MERCHANT_PROFILES = Table(
    name="merchant_profiles",
    doc="What the app knows of its users: `user_id` plus any profile columns (member_level, store, …).",
    key=("user_id",),
    open_columns=True,
    required=False,
    columns=(Column("user_id", "str", True, "User id (platform-wide), unique."),),
)

PLATFORM_PROFILES = Table(
    name="platform_profiles",
    doc=(
        "What the platform knows of a user, shared by all apps: `user_id`, `consent` and profile "
        "columns; each profile column belongs to a consent scope (config `[platform.scopes]`) and is "
        "used only for users whose `consent` lists that scope."
    ),
    key=("user_id",),
    open_columns=True,
    required=False,
    columns=(
        Column("user_id", "str", True, "User id (platform-wide), unique."),
        Column("consent", "str", True, "Consent scopes the user granted, separated by `|` (e.g. `basic|interests`)."),
    ),
)

QUERIES = Table(
    name="queries",
    doc="Search log of the app (optional).",
    required=False,
    columns=(
        Column("user_id", "str", False, "User id; empty for an anonymous search.", ""),
        Column("query", "str", True, "The query as typed."),
        Column("ts", "ts", True, "When: Unix seconds or ISO 8601."),
        Column("clicked_item_id", "str", False, "Item clicked from the results, if any.", ""),
    ),
)

TABLES: tuple[Table, ...] = (ITEMS, INTERACTIONS, MERCHANT_PROFILES, PLATFORM_PROFILES, QUERIES)


def schema_markdown() -> str:
    """The contract as Markdown tables (used by `minirec data schema` and the README)."""
    lines: list[str] = []
    for table in TABLES:
        need = "required" if table.required else "optional"
        lines.append(f"### `{table.name}` ({need})\n\n{table.doc}\n")
        lines.append("| column | type | required | meaning |\n|---|---|---|---|")
        for col in table.columns:
            lines.append(f"| `{col.name}` | {col.kind} | {'yes' if col.required else 'no'} | {col.doc} |")
        if table.open_columns:
            lines.append("| *any other* | str | no | A profile field. |")
        lines.append("")
    return "\n".join(lines)
