"""Importers of public data sets: real ml-100k, Amazon Scientific and Ta-Feng in, valid data folders out.

Every output goes to tmp_path: real data sets must never land inside the repository.
"""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from offline_training.datafolder import AppData, DataError, load_data_folder
from offline_training.importers import (AMAZON_BASE_TS, TAFENG_COLUMNS, TAFENG_ZIP, import_amazon_unisrec,
                                        import_movielens, import_tafeng)
from tests.conftest import shared_dataset

# Tests that read ../shared/data are marked one by one: the Ta-Feng format tests generate their own files.


@pytest.fixture(scope="module")
def movielens(ml100k: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, AppData]:
    out = tmp_path_factory.mktemp("ml") / "folder"
    summary = import_movielens(ml100k, out)
    return summary, load_data_folder(out)


@pytest.fixture(scope="module")
def amazon(amazon_scientific: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, AppData]:
    out = tmp_path_factory.mktemp("amazon") / "folder"
    summary = import_amazon_unisrec(amazon_scientific, out)
    return summary, load_data_folder(out)


def _inter(path: Path) -> pd.DataFrame:
    """A UniSRec .inter file as (user index, history list, target index)."""
    frame = pd.read_csv(path, sep="\t", dtype=str)
    frame.columns = ["user", "hist", "target"]
    return frame.assign(user=frame["user"].astype(int), target=frame["target"].astype(int),
                        hist=frame["hist"].str.split().map(lambda h: [int(x) for x in h]))


def _index(path: Path) -> np.ndarray:
    """Original ids by index from a *2index file."""
    frame = pd.read_csv(path, sep="\t", header=None, names=["id", "index"], dtype={"id": str, "index": int})
    return frame.sort_values("index")["id"].to_numpy()


# ------------------------------------------------------------------------------------------ MovieLens
@pytest.mark.realdata
def test_movielens_counts(movielens: tuple[dict, AppData]) -> None:
    summary, data = movielens
    assert (summary["users"], summary["items"], summary["interactions"]) == (943, 1682, 100_000)
    assert len(data.interactions) == 100_000 and len(data.items) == 1682
    assert data.interactions["user_id"].nunique() == 943 == len(data.platform_profiles) == len(data.merchant_profiles)
    assert set(data.interactions["event"]) == {"rating"}
    assert sorted(data.interactions["value"].unique()) == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert list(data.merchant_profiles.columns) == ["user_id"]


@pytest.mark.realdata
def test_movielens_values(movielens: tuple[dict, AppData]) -> None:
    _, data = movielens
    items = data.items.set_index("item_id")
    toy = items.loc["1"]
    assert toy["title"] == "Toy Story (1995)"
    assert toy["category"] == "Movies/Animation"  # first of its genres in u.genre order
    assert toy["tags"] == "Animation|Children's|Comedy|1990s"
    assert (toy["brand"], toy["price"], toy["stock"], bool(toy["visible"])) == ("", 0.0, 1, True)
    # item 267 has only the `unknown` genre and no release date: root category, no tags
    assert (items.loc["267", "category"], items.loc["267", "tags"]) == ("Movies", "")
    assert items["title"].str.contains("é").any()  # u.item is ISO-8859-1
    users = data.platform_profiles.set_index("user_id")
    assert users.loc["1"].to_dict() == {"consent": "basic|location", "age_band": "18-24", "gender": "M",
                                        "occupation": "technician", "region": "8"}  # 1|24|M|technician|85711
    assert users.loc["2", "age_band"] == "50-55"  # 2|53|F|other|94043
    assert (users["region"] == "other").sum() > 0  # Canadian postcodes such as T8H1N
    first = data.interactions.iloc[0]  # u.data line 1: 196 242 3 881250949
    assert (first["user_id"], first["item_id"], first["value"], first["ts"]) == ("196", "242", 3.0, 881250949)


def _small_movielens(src: Path, dst: Path, data_lines: list[str]) -> Path:
    """A copy of ml-100k in tmp with its own u.data."""
    dst.mkdir()
    for name in ("u.item", "u.user", "u.genre"):
        shutil.copyfile(src / name, dst / name)  # copyfile: the shared originals are read-only
    (dst / "u.data").write_text("".join(line + "\n" for line in data_lines))
    return dst


def _head(path: Path, n: int) -> list[str]:
    return path.read_text().splitlines()[:n]


@pytest.mark.realdata
@pytest.mark.parametrize("bad_line, hint", [("196\t242\t3", "3 fields"), ("196\t242\tx\t881250949", "rating")])
def test_movielens_malformed_line(ml100k: Path, tmp_path: Path, bad_line: str, hint: str) -> None:
    lines = _head(ml100k / "u.data", 20)
    lines.insert(6, bad_line)  # becomes line 7
    src = _small_movielens(ml100k, tmp_path / "src", lines)
    out = tmp_path / "out"
    with pytest.raises(DataError) as err:
        import_movielens(src, out)
    problem = err.value.problems[0]
    assert problem.file.endswith("u.data") and problem.row == 7 and hint in problem.message
    assert "u.data, row 7" in str(err.value)
    assert not out.exists() and list(tmp_path.iterdir()) == [src]  # no partial or hidden folder left


@pytest.mark.realdata
def test_movielens_missing_file(ml100k: Path, tmp_path: Path) -> None:
    src = _small_movielens(ml100k, tmp_path / "src", _head(ml100k / "u.data", 20))
    (src / "u.user").unlink()
    out = tmp_path / "out"
    with pytest.raises(DataError, match=r"u\.user: file not found"):
        import_movielens(src, out)
    assert not out.exists()


@pytest.mark.realdata
def test_movielens_unknown_item(ml100k: Path, tmp_path: Path) -> None:
    src = _small_movielens(ml100k, tmp_path / "src", _head(ml100k / "u.data", 5) + ["1\t99999\t4\t881250949"])
    with pytest.raises(DataError, match=r"u\.data, row 6: item id not in u\.item"):
        import_movielens(src, tmp_path / "out")


@pytest.mark.realdata
def test_movielens_overwrite(ml100k: Path, tmp_path: Path) -> None:
    src = _small_movielens(ml100k, tmp_path / "src", _head(ml100k / "u.data", 30))
    out = tmp_path / "out"
    assert import_movielens(src, out)["interactions"] == 30
    with pytest.raises(FileExistsError):
        import_movielens(src, out)
    assert import_movielens(src, out, overwrite=True)["interactions"] == 30
    assert len(load_data_folder(out).interactions) == 30


# ------------------------------------------------------------------------------------- Amazon (UniSRec)
@pytest.mark.realdata
def test_amazon_counts(amazon: tuple[dict, AppData], amazon_scientific: Path) -> None:
    summary, data = amazon
    assert (summary["users"], summary["items"]) == (8442, 4385)
    assert len(data.merchant_profiles) == 8442 and data.platform_profiles.empty  # no demographics
    assert set(data.interactions["event"]) == {"purchase"} and (data.interactions["value"] == 1.0).all()
    # The data README's 59,384 = test history + target per user, but UniSRec caps histories at 50
    # items; the train prefixes show three users with longer sequences (43 more interactions).
    test = _inter(amazon_scientific / "Scientific.test.inter")
    assert (test["hist"].map(len) + 1).sum() == 59_384
    assert summary["interactions"] == len(data.interactions) == 59_427
    lengths = data.interactions.groupby("user_id").size()
    users = _index(amazon_scientific / "Scientific.user2index")
    readme = pd.Series((test["hist"].map(len) + 1).to_numpy(), index=users[test["user"]])
    longer = lengths[lengths != readme.reindex(lengths.index)]
    assert (readme[longer.index] == 51).all() and (longer - 51).sum() == 43 and len(longer) == 3


@pytest.mark.realdata
def test_amazon_sequences_match_splits(amazon: tuple[dict, AppData], amazon_scientific: Path) -> None:
    _, data = amazon
    users = _index(amazon_scientific / "Scientific.user2index")
    items = _index(amazon_scientific / "Scientific.item2index")
    inter = data.interactions.sort_values(["user_id", "ts"])
    assert not inter.duplicated(["user_id", "ts"]).any() and inter["ts"].min() == AMAZON_BASE_TS
    seqs = inter.groupby("user_id")["item_id"].agg(list)
    for split, back in (("test", 1), ("valid", 2)):
        rows = _inter(amazon_scientific / f"Scientific.{split}.inter")
        got = seqs[users[rows["user"]]]
        # the target is the last (test) or second-to-last (valid) event by time ...
        assert [s[-back] for s in got] == list(items[rows["target"]])
        # ... and the history is what came right before it
        assert all(s[len(s) - back - len(h): len(s) - back] == list(items[h]) for s, h in zip(got, rows["hist"]))


@pytest.mark.realdata
def test_amazon_items(amazon: tuple[dict, AppData]) -> None:
    _, data = amazon
    items = data.items.set_index("item_id")
    assert items.loc["B0000223SI"].to_dict() | {"visible": True} == {
        "title": "PORTER-CABLE 740000801 4 1/2-Inch x 10yd 80 Grit Adhesive-Backed Sanding Roll",
        "category": "Industrial & Scientific/Abrasive & Finishing Products Manual Sanding Products Sanding Rolls",
        "brand": "PORTER-CABLE", "tags": "", "price": 0.0, "stock": 1, "visible": True, "audience": ""}
    # no categories in the source: the data set's root only
    assert items.loc["B00024JE5Q", ["category", "brand"]].tolist() == ["Industrial & Scientific", "TPI"]
    # ". " inside the brand does not move the split ("…Pipe Reamers. Mr. Brog. ")
    assert items.loc["B004M02K7A", "brand"] == "Mr. Brog"
    assert items.loc["B004M02K7A", "title"].startswith("100% Authentic Czech Pipe Tool")
    assert (items["category"].str.count("/") <= 1).all()  # levels are not recoverable: root/leaf at most


@pytest.mark.realdata
def test_amazon_broken_chain(amazon_scientific: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for file in amazon_scientific.iterdir():
        shutil.copyfile(file, src / file.name)  # not copytree: it would copy the read-only modes
    valid = (src / "Scientific.valid.inter").read_text().splitlines()
    user, hist, _ = valid[1].split("\t")
    valid[1] = f"{user}\t{hist}\t4000"  # line 2: user 0's valid target changed; test no longer follows it
    (src / "Scientific.valid.inter").write_text("\n".join(valid) + "\n")
    out = tmp_path / "out"
    with pytest.raises(DataError, match=r"Scientific\.test\.inter, row 2: row does not continue"):
        import_amazon_unisrec(src, out)
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.realdata
def test_amazon_trains_and_evaluates_without_profiles(amazon: tuple[dict, AppData]) -> None:
    """Amazon has no user profiles: the profile kernel degrades to one signature instead of failing."""
    from recsys.config import TrainConfig
    from offline_training.evaluate import evaluate

    cfg = TrainConfig()
    cfg.tuning.budget_seconds, cfg.tuning.budget_seconds_per_million = 10.0, 0.0  # tuning itself is tested elsewhere
    report = evaluate(amazon[1], cfg, "fold-in", progress=False)
    assert report["n_users"] > 1000
    assert report["model"]["ndcg@10"] > 2 * report["popularity"]["ndcg@10"]


@pytest.mark.slow
@pytest.mark.realdata
def test_cold_users_is_refused_without_profiles(amazon: tuple[dict, AppData]) -> None:
    from recsys.config import TrainConfig
    from offline_training.evaluate import evaluate

    with pytest.raises(ValueError, match="needs user profiles"):
        evaluate(amazon[1], TrainConfig(), "cold-users", progress=False, tuning=False)


# ---------------------------------------------------------------------------------------------- Ta-Feng
NOV_1 = 973_008_000  # 2000-11-01T00:00:00+08:00
DAY = 86_400

# (date, customer, age group, area, subclass, product, amount, asset, sales price) as in the real file
TAFENG_ROWS = [
    ("11/1/2000", "00000001", "35-39", "115", "110411", "4710000000001", "2", "20", "30"),   # line 2
    ("11/1/2000", "00000001", "35-39", "115", "110411", "4710000000001", "3", "30", "45"),   # same day: one purchase of 5
    ("11/2/2000", "00000001", "35-39", "115", "110411", "4710000000001", "1", "10", "16"),   # next day: a repeat
    ("11/2/2000", "00000002", "", "Unknown", "120107", "4710000000002", "4", "32", "40"),    # unit 10
    ("2/28/2001", "00000002", "", "Unknown", "120107", "4710000000002", "2", "20", "25"),    # unit 12.5
    ("11/2/2000", "00000003", "<25", " 221 ", "120108", "4710000000002", "1", "9", "11"),    # minority subclass; unit 11
    ("12/31/2000", "00000003", ">65", "221", "130101", "20000003", "3", "1", "1"),            # unit 1/3
    ("12/31/2000", "00000003", "<25", "221", "130101", "20000003", "1", "1", "1"),            # same day, unit 1
    ("1/15/2001", "00000004", "40-44", "106", "140202", "4710000000004", "0", "0", "0"),      # AMOUNT 0: no purchase
]


def _tafeng_csv(rows: list[tuple[str, ...]], header: list[str] = TAFENG_COLUMNS, extra: list[str] = ()) -> bytes:
    """A Ta-Feng CSV like the real one: UTF-8 with BOM, every field quoted, CRLF line ends."""
    lines = [",".join(f'"{v}"' for v in header)] + [",".join(f'"{v}"' for v in row) for row in rows] + list(extra)
    return b"\xef\xbb\xbf" + "".join(line + "\r\n" for line in lines).encode()


def _tafeng_zip(folder: Path, csv: bytes) -> Path:
    folder.mkdir(exist_ok=True)
    with zipfile.ZipFile(folder / TAFENG_ZIP, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(TAFENG_ZIP.removesuffix(".zip"), csv)
    return folder / TAFENG_ZIP


@pytest.mark.parametrize("given", ["folder", "zip", "csv"])
def test_tafeng_small(tmp_path: Path, given: str) -> None:
    csv = _tafeng_csv(TAFENG_ROWS)
    archive = _tafeng_zip(tmp_path / "src", csv)
    if given == "csv":
        (tmp_path / "plain.csv").write_bytes(csv)
    src = {"folder": archive.parent, "zip": archive, "csv": tmp_path / "plain.csv"}[given]
    summary = import_tafeng(src, tmp_path / "out")
    data = load_data_folder(tmp_path / "out")
    assert (summary["users"], summary["items"], summary["interactions"]) == (3, 4, 6)  # customer 4 bought nothing
    inter = data.interactions
    assert set(inter["event"]) == {"purchase"} and data.platform_profiles.empty
    got = sorted(zip(inter["user_id"], inter["item_id"], inter["ts"], inter["value"]))
    assert got == [("00000001", "4710000000001", NOV_1, 5.0),  # two lines on one day: one purchase, 2 + 3
                   ("00000001", "4710000000001", NOV_1 + DAY, 1.0),
                   ("00000002", "4710000000002", NOV_1 + DAY, 4.0),
                   ("00000002", "4710000000002", NOV_1 + 119 * DAY, 2.0),  # 2001-02-28, Taiwan midnight
                   ("00000003", "20000003", NOV_1 + 60 * DAY, 4.0),
                   ("00000003", "4710000000002", NOV_1 + DAY, 1.0)]
    items = data.items.set_index("item_id")
    assert list(items.index) == ["20000003", "4710000000001", "4710000000002", "4710000000004"]
    assert items.loc["4710000000001"].to_dict() == {
        "title": "商品 4710000000001", "category": "110411", "brand": "", "tags": "", "price": 15.0,  # median(15, 15, 16)
        "stock": 1, "visible": True, "audience": ""}
    # subclass of 2 of its 3 lines; median(10, 12.5, 11)
    assert items.loc["4710000000002", ["category", "price"]].tolist() == ["120107", 11.0]
    assert items.loc["20000003", "price"] == 0.67  # median(1/3, 1) rounded to cents
    assert items.loc["4710000000004", "price"] == 0.0  # only an AMOUNT 0 line: listed, no price
    profiles = data.merchant_profiles.set_index("user_id")
    assert list(profiles.columns) == ["age_group", "area"]
    assert profiles.to_dict("index") == {
        "00000001": {"age_group": "35-39", "area": "115"},
        "00000002": {"age_group": "", "area": "Unknown"},   # empty stays empty; the source's words are kept
        "00000003": {"age_group": "<25", "area": "221"},    # most frequent value; whitespace stripped
        "00000004": {"age_group": "40-44", "area": "106"}}


def test_tafeng_cli_and_overwrite(tmp_path: Path) -> None:
    from minirec.cli import main

    archive = _tafeng_zip(tmp_path / "src", _tafeng_csv(TAFENG_ROWS))
    out = tmp_path / "out"
    assert main(["data", "import", "tafeng", str(archive.parent), "--out", str(out)]) == 0
    with pytest.raises(FileExistsError):
        import_tafeng(archive, out)
    assert import_tafeng(archive, out, overwrite=True)["interactions"] == 6


@pytest.mark.parametrize("line, cells, hint", [
    (3, {0: "2000-11-01"}, "TRANSACTION_DT '2000-11-01' is not a date"),
    (3, {0: "2/30/2001"}, "TRANSACTION_DT '2/30/2001' is not a date"),
    (4, {6: "two"}, "AMOUNT 'two' is not a number"),
    (4, {6: "-1"}, "negative AMOUNT '-1'"),
    (5, {8: "1,5"}, "SALES_PRICE '1,5' is not a number"),
    (6, {1: " "}, "empty CUSTOMER_ID"),
    (6, {5: ""}, "empty PRODUCT_ID"),
])
def test_tafeng_bad_line(tmp_path: Path, line: int, cells: dict[int, str], hint: str) -> None:
    rows = [list(r) for r in TAFENG_ROWS]
    for column, value in cells.items():
        rows[line - 2][column] = value
    src = _tafeng_zip(tmp_path / "src", _tafeng_csv([tuple(r) for r in rows]))
    out = tmp_path / "out"
    with pytest.raises(DataError) as err:
        import_tafeng(src.parent, out)
    problem = err.value.problems[0]
    assert problem.file == str(src / "ta_feng_all_months_merged.csv") and problem.row == line
    assert hint in problem.message, problem.message
    assert f"ta_feng_all_months_merged.csv, row {line}:" in str(err.value)
    assert not out.exists() and list(tmp_path.iterdir()) == [src.parent]  # no partial or hidden folder left


@pytest.mark.parametrize("kind, line, hint", [
    ("missing column", 1, "header lacks columns ['AMOUNT']"),
    ("short line", 5, "malformed line: 8 fields, expected 9"),
    ("long line", 12, "malformed line: 10 fields, expected 9"),
    ("no data", 1, "no data lines"),
])
def test_tafeng_malformed_file(tmp_path: Path, kind: str, line: int, hint: str) -> None:
    header, rows, extra = TAFENG_COLUMNS, TAFENG_ROWS, []
    if kind == "missing column":
        header, rows = [c for c in TAFENG_COLUMNS if c != "AMOUNT"], [r[:6] + r[7:] for r in TAFENG_ROWS]
    elif kind == "short line":
        rows = [*TAFENG_ROWS[:3], TAFENG_ROWS[3][:8], *TAFENG_ROWS[4:]]
    elif kind == "long line":
        extra = ["", '"11/1/2000","00000009","","115","1","2","1","1","1","x"']  # line 12, after a blank line 11
    else:
        rows = []
    src = _tafeng_zip(tmp_path / "src", _tafeng_csv(rows, header, extra))
    out = tmp_path / "out"
    with pytest.raises(DataError) as err:
        import_tafeng(src, out)
    problem = err.value.problems[0]
    assert (problem.file, problem.row) == (str(src / "ta_feng_all_months_merged.csv"), line)
    assert hint in problem.message, problem.message
    assert not out.exists() and list(tmp_path.iterdir()) == [src.parent]


def test_tafeng_blank_lines_are_skipped(tmp_path: Path) -> None:
    """Blank lines carry nothing, but later lines keep their own numbers in messages."""
    bad = '"11/1/2000","00000009","","115","1","2","x","1","1"'
    src = _tafeng_zip(tmp_path / "src", _tafeng_csv(TAFENG_ROWS, extra=["", "  ", bad]))
    with pytest.raises(DataError, match=r"ta_feng_all_months_merged\.csv, row 13: AMOUNT 'x'"):
        import_tafeng(src, tmp_path / "out")


def test_tafeng_missing_source(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    with pytest.raises(DataError, match=rf"{TAFENG_ZIP}: file not found"):
        import_tafeng(tmp_path / "src", tmp_path / "out")
    (tmp_path / "src" / TAFENG_ZIP).write_bytes(b"not a zip")
    with pytest.raises(DataError, match="cannot be read"):
        import_tafeng(tmp_path / "src", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.realdata
def test_tafeng_real(tmp_path: Path) -> None:
    src = shared_dataset("ta-feng")
    summary = import_tafeng(src, tmp_path / "out")
    data = load_data_folder(tmp_path / "out")
    with zipfile.ZipFile(src / TAFENG_ZIP) as archive, archive.open(TAFENG_ZIP.removesuffix(".zip")) as f:
        raw = pd.read_csv(f, dtype=str, encoding="utf-8-sig", keep_default_na=False)
    assert len(raw) == 817_741
    assert (summary["users"], summary["items"]) == (32_266, 23_812)
    assert (raw["CUSTOMER_ID"].nunique(), raw["PRODUCT_ID"].nunique()) == (32_266, 23_812)
    # this copy already holds one line per customer, product and day: every line is one purchase
    assert summary["interactions"] == len(data.interactions) == 817_741
    inter = data.interactions
    assert inter["value"].sum() == raw["AMOUNT"].astype(int).sum() == 1_129_939  # every line's quantity is kept
    assert (inter["ts"].min(), inter["ts"].max()) == (NOV_1, NOV_1 + 119 * DAY)  # 2000-11-01 .. 2001-02-28
    assert inter["ts"].nunique() == 120 and set(inter["event"]) == {"purchase"}
    assert len(data.items) == 23_812 and (data.items["price"] > 0).all()
    # 2,012 subclasses in the file; two are only ever the minority subclass of a multi-subclass product
    assert data.items["category"].nunique() == 2010 and raw["PRODUCT_SUBCLASS"].nunique() == 2012
    profiles = data.merchant_profiles.set_index("user_id")
    assert len(profiles) == 32_266 and (profiles["age_group"] == "").sum() == 626
    assert set(profiles["area"]) == {"105", "106", "110", "114", "115", "221", "Others", "Unknown"}
    # line 2: "11/1/2000","01104905","45-49","115","110411","4710199010372","2","24","30"
    first = inter[(inter["user_id"] == "01104905") & (inter["item_id"] == "4710199010372") & (inter["ts"] == NOV_1)]
    assert first["value"].tolist() == [2.0]
    assert profiles.loc["01104905"].tolist() == ["45-49", "115"]
    item = data.items.set_index("item_id").loc["4710199010372"]
    assert (item["title"], item["category"], item["price"]) == ("商品 4710199010372", "110411", 15.0)
