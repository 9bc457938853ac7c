"""Small hand-made data folders for tests (real files, real validation, nothing mocked)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def write_csv_folder(folder: Path, items: list[dict] | None = None, interactions: list[dict] | None = None,
                     **tables: list[dict]) -> Path:
    """Write the given tables as CSV files; items and interactions get a tiny valid default."""
    folder.mkdir(parents=True, exist_ok=True)
    items = items if items is not None else [
        {"item_id": "i1", "title": "华为 Mate 60 手机", "category": "数码/手机", "brand": "华为", "price": "5999"},
        {"item_id": "i2", "title": "三只松鼠 每日坚果", "category": "食品/坚果", "brand": "三只松鼠", "price": "89"},
    ]
    interactions = interactions if interactions is not None else [
        {"user_id": "u1", "item_id": "i1", "event": "click", "ts": "1700000000"},
        {"user_id": "u2", "item_id": "i2", "event": "purchase", "ts": "2026-11-01T12:00:00Z"},
    ]
    pd.DataFrame(items).to_csv(folder / "items.csv", index=False)
    pd.DataFrame(interactions).to_csv(folder / "interactions.csv", index=False)
    for name, rows in tables.items():
        pd.DataFrame(rows).to_csv(folder / f"{name}.csv", index=False)
    return folder
