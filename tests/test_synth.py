"""The synthetic mall: a valid data folder, reproducible, and its ground truth really shows in the data."""

from __future__ import annotations

import errno
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from offline_training import synth
from offline_training.datafolder import AppData, load_data_folder
from offline_training.synth import END_TS, NEEDS, START_TS, TOPS, generate_mall

SMALL = {"users": 1500, "items": 400, "events": 40_000}
TINY = {"users": 300, "items": 60, "events": 5_000}


@pytest.fixture(scope="module")
def mall(tmp_path_factory) -> tuple[dict, AppData, pd.DataFrame]:
    out = tmp_path_factory.mktemp("synth") / "mall"
    summary = generate_mall(out, seed=7, progress=False, **SMALL)
    return summary, load_data_folder(out), pd.read_parquet(out / "ground_truth.parquet")


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _events_with_top(data: AppData) -> pd.DataFrame:
    frame = data.interactions.merge(data.items[["item_id", "category"]], on="item_id")
    frame["top"] = frame["category"].str.split("/").str[0]
    return frame


def test_output_is_a_valid_folder_with_the_requested_sizes(mall) -> None:
    summary, data, truth = mall
    assert summary["interactions"] == len(data.interactions)
    assert summary["queries"] == len(data.queries)
    assert len(data.items) == SMALL["items"] and len(data.platform_profiles) == SMALL["users"]
    assert abs(len(data.interactions) / SMALL["events"] - 1) < 0.15
    assert 0.03 < len(data.queries) / SMALL["events"] < 0.07
    assert 0.55 < len(data.merchant_profiles) / SMALL["users"] < 0.85
    assert set(truth["user_id"]) == set(data.platform_profiles["user_id"])
    active = set(data.interactions["user_id"])
    assert active <= set(data.platform_profiles["user_id"])  # the platform knows everyone
    assert len(active) < SMALL["users"]  # first-time visitors exist
    assert set(data.merchant_profiles["user_id"]) <= active
    assert data.interactions["ts"].between(START_TS, END_TS - 1).all()
    assert set(data.items["category"].str.split("/").str[0]) == set(TOPS)
    assert (data.items["stock"] == 0).any() and not data.items["visible"].all()
    assert data.platform_profiles["consent"].str.startswith("basic").all()


def test_same_seed_gives_identical_files_and_another_seed_does_not(tmp_path: Path) -> None:
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        generate_mall(tmp_path / name, seed=seed, progress=False, **TINY)
    assert _digests(tmp_path / "a") == _digests(tmp_path / "b")
    assert pd.read_parquet(tmp_path / "a" / "interactions.parquet").equals(
        pd.read_parquet(tmp_path / "b" / "interactions.parquet"))
    different = {k for k, v in _digests(tmp_path / "c").items() if _digests(tmp_path / "a")[k] != v}
    assert {"items.parquet", "interactions.parquet", "ground_truth.parquet"} <= different


def test_several_chunks_still_make_one_consistent_folder(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(synth, "CHUNK_USERS", 128)
    summary = generate_mall(tmp_path / "m", seed=1, progress=False, **TINY)
    data = load_data_folder(tmp_path / "m")  # duplicate user ids across chunks would fail here
    assert len(data.platform_profiles) == TINY["users"] == summary["platform_profiles"]
    assert data.interactions["user_id"].nunique() == summary["users_with_events"]


def test_interactions_concentrate_in_ground_truth_interests(mall) -> None:
    _, data, truth = mall
    events = _events_with_top(data).merge(truth[["user_id", "interests"]], on="user_id")
    hit = np.mean([t in s.split("|") for t, s in zip(events["top"], events["interests"])])
    base = events["top"].value_counts(normalize=True).to_dict()  # what an interest-blind user would hit
    per_user = {s: sum(base.get(c, 0.0) for c in s.split("|")) for s in events["interests"].unique()}
    chance = events["interests"].map(per_user).mean()
    assert hit > 0.6 and hit > 3 * chance, (hit, chance)


def test_platform_interests_agree_with_ground_truth_far_beyond_chance(mall) -> None:
    _, data, truth = mall
    both = data.platform_profiles.merge(truth, on="user_id", suffixes=("_seen", "_true"))
    both = both[both["interests_seen"] != ""]
    seen, true = both["interests_seen"].str.split("|"), both["interests_true"].str.split("|")
    precision = np.mean([len(set(s) & set(t)) / len(s) for s, t in zip(seen, true)])
    chance = true.str.len().mean() / len(TOPS)
    assert precision > 0.65 and precision > 3 * chance, (precision, chance)


def test_demographics_really_correlate_with_interests(mall) -> None:
    _, data, truth = mall
    users = data.platform_profiles.drop(columns="interests").merge(truth[["user_id", "interests"]], on="user_id")
    young = users["age_band"].isin(["18-24", "25-34"])

    def share(mask: pd.Series, top: str) -> float:
        return users.loc[mask, "interests"].str.contains(top).mean()

    assert share((users["gender"] == "F") & (users["age_band"] == "25-34"), "母婴") > 2 * share(users["gender"] == "M", "母婴")
    assert share((users["gender"] == "M") & young, "数码") > 2 * share((users["gender"] == "F") & young, "数码")


def test_meal_times_are_busier_than_small_hours_and_the_funnel_narrows(mall) -> None:
    _, data, _ = mall
    hour = (data.interactions["ts"] + 8 * 3600) % 86400 // 3600  # local time, UTC+8
    per_hour = hour.value_counts().reindex(range(24), fill_value=0)
    assert min(per_hour[12], per_hour[19]) > 4 * per_hour[[3, 4]].mean()
    counts = data.interactions["event"].value_counts()
    assert counts["view"] > counts["click"] > counts["cart"] > counts["purchase"] > 0
    values = data.interactions.groupby("event")["value"].unique()
    assert set(values["purchase"]) <= {1.0, 2.0, 3.0} and set(values["view"]) == {1.0}


def test_member_only_items_reach_only_gold_and_platinum_members(mall) -> None:
    _, data, _ = mall
    member_only = set(data.items.loc[data.items["audience"] != "", "item_id"])
    assert 0 < len(member_only) < 0.1 * len(data.items)
    users = set(data.interactions.loc[data.interactions["item_id"].isin(member_only), "user_id"])
    levels = data.merchant_profiles.set_index("user_id")["member_level"]
    assert users and all(levels.get(u) in ("gold", "platinum") for u in users)


def test_clicked_search_results_match_their_query(mall) -> None:
    _, data, _ = mall
    items = data.items.set_index("item_id")
    clicked = data.queries[data.queries["clicked_item_id"] != ""]
    assert 0.4 < len(clicked) / len(data.queries) < 0.8
    for query, item_id in zip(clicked["query"], clicked["clicked_item_id"]):
        brand, category = items.at[item_id, "brand"], items.at[item_id, "category"]
        if query in NEEDS:
            assert category in NEEDS[query]
        else:
            assert query.lower().startswith(brand.lower()) or query == category.split("/")[1], (query, item_id)


@pytest.mark.parametrize("bad", [{"users": 0}, {"items": 5}, {"events": 0}, {"seed": -1}, {"users": 2.5}, {"events": True}])
def test_bad_arguments_raise_a_clear_value_error_and_write_nothing(tmp_path: Path, bad: dict) -> None:
    name = next(iter(bad))
    with pytest.raises(ValueError, match=name):
        generate_mall(tmp_path / "m", progress=False, **{**TINY, **bad})
    assert list(tmp_path.iterdir()) == []


def test_non_empty_folder_is_refused_unless_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "m"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        generate_mall(out, progress=False, **TINY)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    generate_mall(out, overwrite=True, progress=False, **TINY)
    assert not (out / "keep.txt").exists() and (out / "interactions.parquet").exists()


def test_a_failure_mid_generation_leaves_out_untouched(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "m"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    real_write = pq.ParquetWriter.write_table
    calls = []

    def disk_full_on_third_chunk_write(self, table, *args, **kwargs):  # pyarrow's writer, not ours
        calls.append(1)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, table, *args, **kwargs)

    monkeypatch.setattr(synth, "CHUNK_USERS", 100)
    monkeypatch.setattr(pq.ParquetWriter, "write_table", disk_full_on_third_chunk_write)
    with pytest.raises(OSError, match="No space left"):
        generate_mall(out, overwrite=True, progress=False, **TINY)
    assert len(calls) == 3  # the failure really came after tables were partly written
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temporary folder left behind


def test_progress_bar_can_be_silenced(tmp_path: Path, capsys) -> None:
    generate_mall(tmp_path / "quiet", progress=False, **TINY)
    assert capsys.readouterr().err == ""
    generate_mall(tmp_path / "loud", progress=True, **TINY)
    assert "synth" in capsys.readouterr().err
