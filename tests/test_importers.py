"""Importers of public data sets: real ml-100k and Amazon Scientific in, valid data folders out.

Every output goes to tmp_path: real data sets must never land inside the repository.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from offline_training.datafolder import AppData, DataError, load_data_folder
from offline_training.importers import AMAZON_BASE_TS, import_amazon_unisrec, import_movielens

pytestmark = pytest.mark.realdata


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
def test_movielens_counts(movielens: tuple[dict, AppData]) -> None:
    summary, data = movielens
    assert (summary["users"], summary["items"], summary["interactions"]) == (943, 1682, 100_000)
    assert len(data.interactions) == 100_000 and len(data.items) == 1682
    assert data.interactions["user_id"].nunique() == 943 == len(data.platform_profiles) == len(data.merchant_profiles)
    assert set(data.interactions["event"]) == {"rating"}
    assert sorted(data.interactions["value"].unique()) == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert list(data.merchant_profiles.columns) == ["user_id"]


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


def test_movielens_missing_file(ml100k: Path, tmp_path: Path) -> None:
    src = _small_movielens(ml100k, tmp_path / "src", _head(ml100k / "u.data", 20))
    (src / "u.user").unlink()
    out = tmp_path / "out"
    with pytest.raises(DataError, match=r"u\.user: file not found"):
        import_movielens(src, out)
    assert not out.exists()


def test_movielens_unknown_item(ml100k: Path, tmp_path: Path) -> None:
    src = _small_movielens(ml100k, tmp_path / "src", _head(ml100k / "u.data", 5) + ["1\t99999\t4\t881250949"])
    with pytest.raises(DataError, match=r"u\.data, row 6: item id not in u\.item"):
        import_movielens(src, tmp_path / "out")


def test_movielens_overwrite(ml100k: Path, tmp_path: Path) -> None:
    src = _small_movielens(ml100k, tmp_path / "src", _head(ml100k / "u.data", 30))
    out = tmp_path / "out"
    assert import_movielens(src, out)["interactions"] == 30
    with pytest.raises(FileExistsError):
        import_movielens(src, out)
    assert import_movielens(src, out, overwrite=True)["interactions"] == 30
    assert len(load_data_folder(out).interactions) == 30


# ------------------------------------------------------------------------------------- Amazon (UniSRec)
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


def test_amazon_trains_and_evaluates_without_profiles(amazon: tuple[dict, AppData]) -> None:
    """Amazon has no user profiles: the profile kernel degrades to one signature instead of failing."""
    from recsys.config import TrainConfig
    from offline_training.evaluate import evaluate

    cfg = TrainConfig()
    cfg.tuning.budget_seconds, cfg.tuning.budget_seconds_per_million = 10.0, 0.0  # tuning itself is tested elsewhere
    report = evaluate(amazon[1], cfg, "fold-in", progress=False)
    assert report["n_users"] > 1000
    assert report["model"]["ndcg@10"] > 2 * report["popularity"]["ndcg@10"]


def test_cold_users_is_refused_without_profiles(amazon: tuple[dict, AppData]) -> None:
    from recsys.config import TrainConfig
    from offline_training.evaluate import evaluate

    with pytest.raises(ValueError, match="needs user profiles"):
        evaluate(amazon[1], TrainConfig(), "cold-users", progress=False, tuning=False)
