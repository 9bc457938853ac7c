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
from offline_training.synth import CYCLE_DAYS, DAYS, END_TS, NEEDS, START_TS, TOPS, TRENDS, generate_mall

SMALL = {"users": 1500, "items": 400, "events": 40_000}
TINY = {"users": 300, "items": 60, "events": 5_000}


@pytest.fixture(scope="module")
def mall(tmp_path_factory) -> tuple[dict, AppData, pd.DataFrame]:
    out = tmp_path_factory.mktemp("synth") / "mall"
    summary = generate_mall(out, seed=7, progress=False, **SMALL)
    return summary, load_data_folder(out), pd.read_parquet(out / "ground_truth.parquet")


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def item_truth(mall) -> pd.DataFrame:
    summary, _, _ = mall
    return pd.read_parquet(Path(summary["out"]) / "item_truth.parquet")


def _third(ts: pd.Series) -> pd.Series:
    """0, 1 or 2: which third of the period each timestamp falls in."""
    return (ts - START_TS) * 3 // (END_TS - START_TS)


def _purchase_pairs(data: AppData, item_truth: pd.DataFrame) -> pd.DataFrame:
    """One row per (user, item) bought: distinct purchase days, the item's cycle and top category."""
    buys = data.interactions[data.interactions["event"] == "purchase"].merge(item_truth, on="item_id")
    buys = buys.merge(data.items[["item_id", "category"]], on="item_id")
    buys["day"] = (buys["ts"] - START_TS) // 86400
    return buys.groupby(["user_id", "item_id"]).agg(
        days=("day", "nunique"), cycle=("cycle_days", "first"), category=("category", "first")).reset_index()


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
    assert {"items.parquet", "interactions.parquet", "ground_truth.parquet", "item_truth.parquet"} <= different


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


def test_the_period_is_sixty_days_so_models_can_be_judged_on_the_future(mall) -> None:
    summary, data, _ = mall
    assert DAYS == 60 and END_TS - START_TS == DAYS * 86400
    assert (summary["start_ts"], summary["end_ts"]) == (START_TS, END_TS)
    days = (data.interactions["ts"] - START_TS) // 86400
    assert days.nunique() == DAYS  # every day has traffic, the last 15 days too
    assert (days >= 45).mean() > 0.15


def test_item_truth_describes_every_item(mall, item_truth) -> None:
    _, data, _ = mall
    assert item_truth["item_id"].tolist() == data.items["item_id"].tolist()
    share = item_truth["trend"].value_counts(normalize=True)
    assert set(share.index) == set(TRENDS) and 0.04 < share["rising"] < 0.2 and 0.04 < share["fading"] < 0.2
    rising, fading = item_truth["trend"] == "rising", item_truth["trend"] == "fading"
    assert (item_truth.loc[~rising, "launch_ts"] == START_TS).all()
    assert item_truth.loc[rising, "launch_ts"].between(START_TS + 86400, END_TS - 20 * 86400).all()
    assert (item_truth.loc[rising, "ramp_days"] > 0).all() and (item_truth.loc[~rising, "ramp_days"] == 0).all()
    assert (item_truth.loc[fading, "half_life_days"] > 0).all() and (item_truth.loc[~fading, "half_life_days"] == 0).all()
    consumable = data.items["category"].isin(CYCLE_DAYS).to_numpy()
    assert (item_truth["cycle_days"].to_numpy() > 0).tolist() == consumable.tolist()
    assert item_truth.loc[consumable, "cycle_days"].between(*synth.CYCLE_RANGE).all()
    new = data.items.loc[rising.to_numpy(), "tags"].str.split("|")
    assert new.map(lambda tags: "新品" in tags).all()  # the merchant tags launches as new


def test_rising_items_appear_at_launch_and_grow_while_fading_items_fade(mall, item_truth) -> None:
    _, data, _ = mall
    events = data.interactions.merge(item_truth, on="item_id")
    assert (events["ts"] >= events["launch_ts"]).all()  # nothing before an item's launch
    clicks = data.queries.merge(item_truth, left_on="clicked_item_id", right_on="item_id")
    assert len(clicks) and (clicks["ts"] >= clicks["launch_ts"]).all()  # not even a search click
    per_third = events.groupby(["trend", _third(events["ts"])]).size().unstack(fill_value=0)
    assert per_third.loc["rising", 2] > 3 * per_third.loc["rising", 0], per_third
    assert per_third.loc["fading", 0] > 3 * per_third.loc["fading", 2], per_third
    assert 0.6 < per_third.loc["steady", 2] / per_third.loc["steady", 0] < 1.25, per_third
    # after launch, demand grows: the third week after it is busier than the first
    rising = events[(events["trend"] == "rising") & (events["launch_ts"] + 21 * 86400 <= END_TS)]
    week = (rising["ts"] - rising["launch_ts"]) // (7 * 86400)
    assert (week == 2).sum() > 1.5 * (week == 0).sum(), week.value_counts()
    # item by item, not just in sum
    per_item = events.groupby(["item_id", _third(events["ts"])]).size().unstack(fill_value=0)
    per_item = per_item.join(item_truth.set_index("item_id")["trend"])
    busy = per_item[per_item[[0, 1, 2]].sum(axis=1) >= 20]
    assert (busy.loc[busy["trend"] == "rising", 2] > busy.loc[busy["trend"] == "rising", 0]).mean() > 0.9
    assert (busy.loc[busy["trend"] == "fading", 0] > busy.loc[busy["trend"] == "fading", 2]).mean() > 0.9


def test_consumables_are_bought_again_and_durables_never(mall, item_truth) -> None:
    _, data, _ = mall
    pairs = _purchase_pairs(data, item_truth)
    repeat = pairs["days"] >= 2
    consumable, durable = pairs["cycle"] > 0, pairs["category"].str.split("/").str[0].isin(["数码", "家电"])
    assert consumable.sum() > 200 and durable.sum() > 50
    assert repeat[consumable].mean() > 0.5, repeat[consumable].mean()
    assert repeat[durable].mean() == 0 and repeat[~consumable].mean() == 0
    # a repurchase goes through the funnel like any purchase: viewed, clicked and carted first
    counts = data.interactions.groupby(["user_id", "item_id", "event"]).size().unstack(fill_value=0)
    for step in ("view", "click", "cart"):
        assert (counts[step] >= counts["purchase"]).all(), step


def test_repurchase_intervals_centre_on_the_items_cycles(mall, item_truth) -> None:
    _, data, _ = mall
    buys = data.interactions[data.interactions["event"] == "purchase"].merge(item_truth, on="item_id")
    buys = buys[buys["cycle_days"] > 0].sort_values(["user_id", "item_id", "ts"])
    gaps = pd.DataFrame({"days": buys.groupby(["user_id", "item_id"])["ts"].diff() / 86400,
                         "cycle": buys["cycle_days"]}).dropna()
    assert len(gaps) > 200
    ratio = gaps["days"] / gaps["cycle"]
    assert 0.9 < ratio.median() < 1.1 and ratio.between(0.6, 1.6).mean() > 0.9, ratio.describe()
    assert np.corrcoef(gaps["days"], gaps["cycle"])[0, 1] > 0.8
    assert gaps.loc[gaps["cycle"] < 12, "days"].median() < 0.6 * gaps.loc[gaps["cycle"] > 20, "days"].median()


def test_repeat_buying_is_steady_from_the_first_day(mall, item_truth) -> None:
    """Consumables bought before the period are rebought in it, so their purchases do not ramp up."""
    _, data, _ = mall
    buys = data.interactions[data.interactions["event"] == "purchase"].merge(item_truth, on="item_id")
    per_third = _third(buys.loc[buys["cycle_days"] > 0, "ts"]).value_counts()
    assert len(per_third) == 3 and per_third.max() < 1.3 * per_third.min(), per_third


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
