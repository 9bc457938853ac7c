"""Read, validate and write an app's data folder (Parquet or CSV) per `recsys.schema`.

Validation collects every problem it finds (up to a cap per table) and names file, row and column,
so that a merchant can fix a file in one pass. Nothing is returned or written from bad input.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from recsys.schema import (
    EVENT_TYPES,
    INTERACTIONS,
    ITEMS,
    LIST_SEP,
    MERCHANT_PROFILES,
    PLATFORM_PROFILES,
    QUERIES,
    Column,
    Table,
)

#: Problems listed per table before the rest are only counted.
MAX_PROBLEMS_PER_TABLE = 20

#: Default consent scopes of platform profile columns (config `[platform.scopes]` overrides it).
DEFAULT_SCOPES: dict[str, tuple[str, ...]] = {
    "basic": ("age_band", "gender", "occupation"),
    "location": ("city_tier", "region"),
    "interests": ("interests",),
}

_LATEST_TS = 4_102_444_800  # 2100-01-01: anything later is probably milliseconds


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input, located as precisely as we can."""

    file: str
    message: str
    row: int | None = None
    column: str | None = None

    def __str__(self) -> str:
        where = self.file
        if self.row is not None:
            where += f", row {self.row}"
        if self.column is not None:
            where += f", column '{self.column}'"
        return f"{where}: {self.message}"


class DataError(ValueError):
    """The data folder does not meet the contract; `problems` says where and why."""

    def __init__(self, problems: list[Problem], hidden: int = 0) -> None:
        self.problems = problems
        self.hidden = hidden
        lines = [str(p) for p in problems]
        if hidden:
            lines.append(f"… and {hidden} more problems")
        super().__init__(f"{len(problems) + hidden} problem(s) in the data folder:\n  " + "\n  ".join(lines))


@dataclass
class AppData:
    """A validated data folder. Ids are strings, `ts` are Unix seconds (int64)."""

    items: pd.DataFrame
    interactions: pd.DataFrame
    merchant_profiles: pd.DataFrame
    platform_profiles: pd.DataFrame
    queries: pd.DataFrame | None
    fingerprint: str
    scopes: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_SCOPES))


class _Collector:
    """Collects problems of one table, keeping the first few and counting the rest."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[Problem] = []
        self.hidden = 0

    def add(self, message: str, row: int | None = None, column: str | None = None) -> None:
        if len(self.problems) < MAX_PROBLEMS_PER_TABLE:
            self.problems.append(Problem(self.file, message, row, column))
        else:
            self.hidden += 1

    def add_rows(self, mask: np.ndarray, rows: np.ndarray, column: str, values: pd.Series, what: str) -> None:
        """Report every row where `mask` is true, quoting the offending value."""
        bad = np.flatnonzero(mask)
        for i in bad[: MAX_PROBLEMS_PER_TABLE]:
            value = values.iloc[i]
            shown = repr(value) if isinstance(value, str) else str(value)
            self.add(f"{what}: {shown}", int(rows[i]), column)
        self.hidden += max(0, len(bad) - MAX_PROBLEMS_PER_TABLE)


def find_table_file(folder: Path, name: str) -> Path | None:
    """`folder/name.parquet` or `folder/name.csv`; both present is ambiguous and refused."""
    found = [p for p in (folder / f"{name}.parquet", folder / f"{name}.csv") if p.exists()]
    if len(found) > 1:
        raise DataError([Problem(str(folder), f"both {name}.parquet and {name}.csv exist; keep one")])
    return found[0] if found else None


def _read_raw(path: Path) -> tuple[pd.DataFrame, np.ndarray]:
    """Read a table as-is; returns the frame and the 1-based row number (CSV: line) of each row."""
    try:
        if path.suffix == ".csv":
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False, encoding="utf-8")
            rows = np.arange(len(frame), dtype=np.int64) + 2  # line 1 is the header
        else:
            frame = pq.read_table(path).to_pandas()
            rows = np.arange(len(frame), dtype=np.int64) + 1
    except pd.errors.ParserError as exc:
        raise DataError([Problem(path.name, f"malformed CSV ({exc})", _parser_error_line(str(exc)))]) from exc
    except (pd.errors.EmptyDataError, pa.ArrowException, UnicodeDecodeError, OSError) as exc:
        raise DataError([Problem(path.name, f"cannot be read: {exc}")]) from exc
    return frame, rows


def _parser_error_line(message: str) -> int | None:
    """The file line a pandas CSV error points at: it says 'line N' (1-based) or 'row N' (0-based)."""
    if match := re.search(r"\bline (\d+)", message):
        return int(match.group(1))
    if match := re.search(r"\brow (\d+)", message):
        return int(match.group(1)) + 1
    return None


def _as_text(series: pd.Series) -> pd.Series:
    """Cells as stripped strings; missing cells become ''. Arrow-backed strings skip the slow object path."""
    if pd.api.types.is_string_dtype(series.dtype) and series.dtype != object:
        return series.fillna("").str.strip()
    return series.astype(object).where(series.notna(), "").astype(str).str.strip()


def _is_number_column(raw: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(raw.dtype) and not pd.api.types.is_bool_dtype(raw.dtype)


def _coerce(col: Column, raw: pd.Series, rows: np.ndarray, out: _Collector) -> pd.Series:
    if col.kind in ("int", "float", "ts") and _is_number_column(raw):
        return _coerce_typed_number(col, raw, rows, out)  # Parquet numbers: no text round trip
    text = _as_text(raw)
    empty = (text == "").to_numpy()
    if col.required:
        out.add_rows(empty, rows, col.name, text, "empty value in a required column")
    if col.kind in ("str", "event"):
        values = text.where(~empty, "" if col.default is None else str(col.default))
        if col.kind == "event":
            values = values.str.lower()
            out.add_rows(~values.isin(EVENT_TYPES).to_numpy() & ~empty, rows, col.name, text,
                         f"unknown event (expected one of {', '.join(EVENT_TYPES)})")
        return values
    if col.kind in ("int", "float"):
        numbers = pd.to_numeric(text.where(~empty, None), errors="coerce")
        bad = numbers.isna().to_numpy() & ~empty
        out.add_rows(bad, rows, col.name, text, f"not a number ({col.kind})")
        return _finish_number(col, numbers, rows, out, text)
    if col.kind == "bool":
        lowered = text.str.lower()
        truth = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
        bad = ~lowered.isin(list(truth)).to_numpy() & ~empty
        out.add_rows(bad, rows, col.name, text, "not a boolean (true/false, 1/0, yes/no)")
        return lowered.map(truth).fillna(bool(col.default)).astype(bool)
    if col.kind == "ts":
        return _coerce_ts(col, text, empty, rows, out)
    raise AssertionError(f"unknown column kind {col.kind}")  # a bug in schema.py, not user input


def _finish_number(col: Column, numbers: pd.Series, rows: np.ndarray, out: _Collector, shown: pd.Series) -> pd.Series:
    """Integer check and defaults for a numeric column (NaN = missing)."""
    if col.kind == "int":
        frac = (numbers.notna() & (numbers % 1 != 0)).to_numpy()
        out.add_rows(frac, rows, col.name, shown, "not an integer")
    filled = numbers.fillna(col.default if col.default is not None else 0)
    return filled.astype(np.int64 if col.kind == "int" else np.float64)


def _coerce_typed_number(col: Column, raw: pd.Series, rows: np.ndarray, out: _Collector) -> pd.Series:
    numbers = raw.astype(np.float64)
    missing = numbers.isna().to_numpy()
    if col.required:
        out.add_rows(missing, rows, col.name, numbers, "empty value in a required column")
    if col.kind == "ts":
        seconds = numbers.to_numpy()
        out.add_rows(~missing & ((seconds < 0) | (seconds > _LATEST_TS)), rows, col.name, numbers,
                     "timestamp out of range (expected Unix seconds, not milliseconds)")
        return pd.Series(np.nan_to_num(seconds, nan=0.0).astype(np.int64), index=raw.index)
    return _finish_number(col, numbers, rows, out, numbers)


def _coerce_ts(col: Column, text: pd.Series, empty: np.ndarray, rows: np.ndarray, out: _Collector) -> pd.Series:
    numbers = pd.to_numeric(text.where(~empty, None), errors="coerce")
    is_number = numbers.notna().to_numpy()
    seconds = numbers.to_numpy(dtype=np.float64, na_value=np.nan)
    if (~is_number & ~empty).any():
        parsed = pd.to_datetime(text.where(~is_number & ~empty, None), errors="coerce", utc=True, format="ISO8601")
        ok = parsed.notna().to_numpy()
        if ok.any():
            since_epoch = (parsed[ok] - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy()
            seconds = seconds.copy()
            seconds[ok] = np.floor(since_epoch)
        out.add_rows(~ok & ~is_number & ~empty, rows, col.name, text,
                     "not a timestamp (Unix seconds or ISO 8601)")
    out.add_rows(is_number & ((seconds < 0) | (seconds > _LATEST_TS)), rows, col.name, text,
                 "timestamp out of range (expected Unix seconds, not milliseconds)")
    return pd.Series(np.nan_to_num(seconds, nan=0.0).astype(np.int64), index=text.index)


def _read_table(folder: Path, table: Table, out_problems: list[Problem], hidden: list[int]) -> tuple[pd.DataFrame | None, np.ndarray, str]:
    """Read, coerce and check one table's columns. Returns (frame or None, row numbers, file name)."""
    path = find_table_file(folder, table.name)
    if path is None:
        if table.required:
            out_problems.append(Problem(str(folder), f"missing table '{table.name}' ({table.name}.parquet or {table.name}.csv)"))
        return None, np.zeros(0, dtype=np.int64), ""
    raw, rows = _read_raw(path)
    out = _Collector(path.name)
    known = {c.name for c in table.columns}
    for col in table.columns:
        if col.required and col.name not in raw.columns:
            out.add(f"missing required column '{col.name}'", column=col.name)
    if not table.open_columns:
        for name in raw.columns:
            if name not in known:
                out.add(f"unknown column '{name}' (expected: {', '.join(sorted(known))})", column=str(name))
    frame = pd.DataFrame(index=raw.index)
    for col in table.columns:
        if col.name in raw.columns:
            frame[col.name] = _coerce(col, raw[col.name], rows, out)
        elif col.default is not None:
            frame[col.name] = col.default
    if table.open_columns:
        for name in raw.columns:
            if name not in known:
                frame[str(name)] = _as_text(raw[name])
    for key in table.key:
        if key in frame.columns:
            dup = frame[key].duplicated().to_numpy() & (frame[key] != "").to_numpy()
            out.add_rows(dup, rows, key, frame[key], f"duplicate {key}")
    out_problems.extend(out.problems)
    hidden[0] += out.hidden
    return frame, rows, path.name


def _check_items(items: pd.DataFrame, rows: np.ndarray, file: str, out: _Collector) -> None:
    out.add_rows((items["price"] < 0).to_numpy(), rows, "price", items["price"], "negative price")
    out.add_rows((items["stock"] < 0).to_numpy(), rows, "stock", items["stock"], "negative stock")
    aud = items["audience"]
    malformed = (aud != "") & ~aud.str.match(r"^[A-Za-z_][\w.]*:[^:]+$")
    out.add_rows(malformed.to_numpy(), rows, "audience", aud, "audience must be empty or 'field:value1|value2'")
    bad_cat = items["category"].str.contains("//", regex=False) | items["category"].str.startswith("/")
    out.add_rows(bad_cat.to_numpy(), rows, "category", items["category"], "category path has an empty level")


def _check_platform(platform: pd.DataFrame, rows: np.ndarray, file: str, scopes: dict[str, tuple[str, ...]], out: _Collector) -> None:
    scoped = {c for cols in scopes.values() for c in cols}
    for name in platform.columns:
        if name not in ("user_id", "consent") and name not in scoped:
            out.add(f"column '{name}' belongs to no consent scope; add it to [platform.scopes] in the config",
                    column=name)
    consent = platform["consent"].str.split(LIST_SEP)
    unknown = consent.map(lambda granted: any(s and s not in scopes and s != "all" for s in granted))
    out.add_rows(unknown.to_numpy(dtype=bool), rows, "consent", platform["consent"],
                 f"unknown consent scope (known: {', '.join(sorted(scopes))}, all)")


def data_fingerprint(paths: list[Path]) -> str:
    """sha256 over the bytes of the given files, in order (identifies the training input)."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode())
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def load_data_folder(
    folder: str | os.PathLike,
    platform_dir: str | os.PathLike | None = None,
    scopes: dict[str, tuple[str, ...]] | None = None,
) -> AppData:
    """Load and validate an app's data folder; raise `DataError` listing every problem found.

    The platform profiles are read from `platform_dir` when given, else from the data folder itself
    (a single-app export), else they are empty.
    """
    root = Path(folder)
    if not root.is_dir():
        raise DataError([Problem(str(root), "not a directory")])
    scopes = dict(scopes or DEFAULT_SCOPES)
    problems: list[Problem] = []
    hidden = [0]
    items, item_rows, items_file = _read_table(root, ITEMS, problems, hidden)
    inter, inter_rows, inter_file = _read_table(root, INTERACTIONS, problems, hidden)
    merchant, _, _ = _read_table(root, MERCHANT_PROFILES, problems, hidden)
    plat_root = Path(platform_dir) if platform_dir is not None else root
    if platform_dir is not None and not plat_root.is_dir():
        problems.append(Problem(str(plat_root), "platform profile folder is not a directory"))
    platform, plat_rows, plat_file = _read_table(plat_root, PLATFORM_PROFILES, problems, hidden)
    queries, query_rows, query_file = _read_table(root, QUERIES, problems, hidden)

    if items is not None and not problems:
        out = _Collector(items_file)
        _check_items(items, item_rows, items_file, out)
        problems += out.problems
        hidden[0] += out.hidden
    if items is not None and inter is not None and not problems:
        out = _Collector(inter_file)
        unknown = ~inter["item_id"].isin(items["item_id"]).to_numpy()
        out.add_rows(unknown, inter_rows, "item_id", inter["item_id"], "interaction for an unknown item")
        problems += out.problems
        hidden[0] += out.hidden
    if queries is not None and items is not None and not problems:
        out = _Collector(query_file)
        clicked = queries["clicked_item_id"]
        out.add_rows(((clicked != "") & ~clicked.isin(items["item_id"])).to_numpy(), query_rows,
                     "clicked_item_id", clicked, "click on an unknown item")
        problems += out.problems
        hidden[0] += out.hidden
    if platform is not None and not problems:
        out = _Collector(plat_file)
        _check_platform(platform, plat_rows, plat_file, scopes, out)
        problems += out.problems
        hidden[0] += out.hidden
    if problems or hidden[0]:
        raise DataError(problems, hidden[0])

    files = [find_table_file(root, t.name) for t in (ITEMS, INTERACTIONS, MERCHANT_PROFILES, QUERIES)]
    files.append(find_table_file(plat_root, PLATFORM_PROFILES.name))
    assert items is not None and inter is not None  # guaranteed: missing required tables are problems
    return AppData(
        items=items.reset_index(drop=True),
        interactions=inter.reset_index(drop=True),
        merchant_profiles=merchant if merchant is not None else pd.DataFrame({"user_id": pd.Series([], dtype=str)}),
        platform_profiles=platform if platform is not None
        else pd.DataFrame({"user_id": pd.Series([], dtype=str), "consent": pd.Series([], dtype=str)}),
        queries=queries,
        fingerprint=data_fingerprint([f for f in files if f is not None]),
        scopes=scopes,
    )


class FolderWriter:
    """Writes a data folder atomically: tables go to a hidden sibling folder that is renamed at the end.

    Use as a context manager; on an exception the partial folder is removed and `out` is untouched.
    Large tables can be written in chunks with `append`.
    """

    def __init__(self, out: str | os.PathLike, overwrite: bool = False) -> None:
        self.out = Path(out)
        if self.out.exists() and any(self.out.iterdir()) and not overwrite:
            raise FileExistsError(f"{self.out} exists and is not empty; pass --overwrite to replace it")
        self.overwrite = overwrite
        self._writers: dict[str, pq.ParquetWriter] = {}

    def __enter__(self) -> "FolderWriter":
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.tmp-", dir=self.out.parent))
        return self

    def write(self, name: str, frame: pd.DataFrame) -> None:
        """Write a whole table as Parquet."""
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), self.tmp / f"{name}.parquet")

    def append(self, name: str, frame: pd.DataFrame) -> None:
        """Append a chunk to a table (same columns every time)."""
        table = pa.Table.from_pandas(frame, preserve_index=False)
        writer = self._writers.get(name)
        if writer is None:
            writer = self._writers[name] = pq.ParquetWriter(self.tmp / f"{name}.parquet", table.schema)
        writer.write_table(table.cast(writer.schema))

    def __exit__(self, exc_type, exc, tb) -> None:
        for writer in self._writers.values():
            writer.close()
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        if self.out.exists():
            shutil.rmtree(self.out)
        os.replace(self.tmp, self.out)
