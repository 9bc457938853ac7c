"""Validation names file, row and column of each problem, and accepts good input in both formats."""

from __future__ import annotations

import pandas as pd
import pytest

from offline_training.datafolder import DataError, FolderWriter, load_data_folder
from tests.factories import write_csv_folder


def problems(folder, **kwargs) -> list[str]:
    with pytest.raises(DataError) as info:
        load_data_folder(folder, **kwargs)
    return [str(p) for p in info.value.problems]


def test_valid_csv_folder_loads_with_types(tmp_path):
    data = load_data_folder(write_csv_folder(tmp_path / "d"))
    assert list(data.items["item_id"]) == ["i1", "i2"]
    assert data.items["price"].tolist() == [5999.0, 89.0]
    assert data.items["visible"].tolist() == [True, True]  # default
    assert data.interactions["ts"].tolist() == [1700000000, 1793534400]  # ISO 8601 parsed as UTC
    assert data.interactions["value"].tolist() == [1.0, 1.0]
    assert len(data.fingerprint) == 64


def test_parquet_and_csv_give_the_same_data(tmp_path):
    csv = load_data_folder(write_csv_folder(tmp_path / "csv"))
    with FolderWriter(tmp_path / "pq") as out:
        for name in ("items", "interactions"):
            out.write(name, pd.read_csv(tmp_path / "csv" / f"{name}.csv", dtype=str))
    pq = load_data_folder(tmp_path / "pq")
    pd.testing.assert_frame_equal(csv.items, pq.items)
    pd.testing.assert_frame_equal(csv.interactions, pq.interactions)


def test_missing_table_and_missing_column(tmp_path):
    folder = write_csv_folder(tmp_path / "d", items=[{"item_id": "i1", "title": "t"}])
    (folder / "interactions.csv").unlink()
    found = problems(folder)
    assert any("missing table 'interactions'" in p for p in found)
    assert any("items.csv, column 'category': missing required column" in p for p in found)


def test_each_bad_cell_is_named_by_row_and_column(tmp_path):
    folder = write_csv_folder(
        tmp_path / "d",
        items=[{"item_id": "i1", "title": "a", "category": "数码/手机", "price": "cheap", "stock": "2.5"},
               {"item_id": "i1", "title": "b", "category": "食品", "price": "3", "stock": "1"}],
        interactions=[{"user_id": "u1", "item_id": "i1", "event": "like", "ts": "yesterday"},
                      {"user_id": "", "item_id": "i1", "event": "view", "ts": "1700000000000"}],
    )
    found = problems(folder)
    assert "items.csv, row 2, column 'price': not a number (float): 'cheap'" in found
    assert "items.csv, row 2, column 'stock': not an integer: '2.5'" in found
    assert "items.csv, row 3, column 'item_id': duplicate item_id: 'i1'" in found
    assert any(p.startswith("interactions.csv, row 2, column 'event': unknown event") for p in found)
    assert any(p.startswith("interactions.csv, row 2, column 'ts': not a timestamp") for p in found)
    assert any(p.startswith("interactions.csv, row 3, column 'user_id': empty value") for p in found)
    assert any(p.startswith("interactions.csv, row 3, column 'ts': timestamp out of range") for p in found)


def test_unknown_columns_are_reported_not_dropped(tmp_path):
    folder = write_csv_folder(tmp_path / "d", items=[
        {"item_id": "i1", "title": "a", "category": "c", "colour": "red"}])
    assert any("column 'colour': unknown column 'colour'" in p for p in problems(folder))


def test_interaction_for_unknown_item(tmp_path):
    folder = write_csv_folder(tmp_path / "d", interactions=[
        {"user_id": "u1", "item_id": "nope", "event": "view", "ts": "1700000000"}])
    assert problems(folder) == ["interactions.csv, row 2, column 'item_id': interaction for an unknown item: 'nope'"]


def test_truncated_csv_reports_its_row(tmp_path):
    folder = write_csv_folder(tmp_path / "d")
    text = (folder / "interactions.csv").read_text()
    (folder / "interactions.csv").write_text(text + 'u3,i1,"vie')  # cut inside a quoted field
    found = problems(folder)
    assert len(found) == 1 and "interactions.csv" in found[0] and "row 4" in found[0]


def test_platform_columns_need_a_consent_scope(tmp_path):
    folder = write_csv_folder(tmp_path / "d", platform_profiles=[
        {"user_id": "u1", "consent": "basic|telepathy", "age_band": "25-34", "shoe_size": "42"}])
    found = problems(folder)
    assert any("column 'shoe_size' belongs to no consent scope" in p for p in found)
    assert any("row 2, column 'consent': unknown consent scope" in p for p in found)


def test_folder_writer_leaves_nothing_on_error(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with FolderWriter(out) as writer:
            writer.write("items", pd.DataFrame({"item_id": ["a"]}))
            raise RuntimeError("interrupted")
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_folder_writer_refuses_non_empty_folder(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError):
        FolderWriter(tmp_path / "out")
