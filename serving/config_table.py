"""Typed reads of one TOML table for the server's config files, with errors that name file and key.

`serving/server_config.py` reads minirec.toml and search.toml through `Table`, so every table
rejects unknown keys and wrong types the same way:

    minirec.toml: [apps.demo.scenes.home] unknown key 'max_per_categroy'; known: boosted, …
    minirec.toml: [server] redis_budget_ms: expected a whole number >= 1, got 'fast' (str)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


class ServerConfigError(ValueError):
    """A server config file (minirec.toml, search.toml) is missing, unreadable or invalid; the
    message names the file and the dotted key."""


def _shown(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


class Table:
    """One table of a config file: `file` names the file, `name` the dotted table ("" at the top).

    Keys not in `known` are refused at once (pass `known=None` for a table whose keys are names,
    like `[apps]`, and read it with `tables()` or `items()`)."""

    def __init__(self, raw: Any, file: str, name: str, known: Iterable[str] | None) -> None:
        self.file, self.name = file, name
        if not isinstance(raw, dict):
            raise self.error(f"expected a table, got {_shown(raw)}")
        self.raw: dict[str, Any] = raw
        if known is not None:
            known = tuple(known)
            for key in raw:
                if key not in known:
                    raise self.error(f"unknown key '{key}'; known: {', '.join(sorted(known))}")

    @property
    def where(self) -> str:
        """`file: [table]` (or just `file:` at the top), the prefix of every message."""
        return f"{self.file}: [{self.name}]" if self.name else f"{self.file}:"

    def error(self, message: str, key: str | None = None) -> ServerConfigError:
        """An error about this table, or about `key` of it."""
        return ServerConfigError(f"{self.where} {key}: {message}" if key else f"{self.where} {message}")

    def expected(self, key: str, what: str, value: Any) -> ServerConfigError:
        """The wrong-type error: file, table, key, what was expected and the value found."""
        return self.error(f"expected {what}, got {_shown(value)}", key)

    def path(self, key: str) -> str:
        """The dotted name of a sub-table."""
        return f"{self.name}.{key}" if self.name else key

    def __contains__(self, key: str) -> bool:
        return key in self.raw

    # --- typed values ---------------------------------------------------------------------------

    def integer(self, key: str, default: int, low: int = 0, what: str | None = None) -> int:
        """A whole number >= low (TOML booleans are not numbers here)."""
        value = self.raw.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise self.expected(key, what or f"a whole number >= {low}", value)
        return value

    def number(self, key: str, default: float, low: float = 0.0, high: float | None = None,
               above: bool = False, what: str | None = None) -> float:
        """A finite number >= low (> low with `above`) and <= high, as a float."""
        value = self.raw.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or (value <= low if above else value < low) or (high is not None and value > high):
            bound = f"> {low:g}" if above else f">= {low:g}"
            raise self.expected(key, what or (f"a number {bound}" + (f" and <= {high:g}" if high is not None else "")),
                                value)
        return float(value)

    def boolean(self, key: str, default: bool) -> bool:
        """true or false (never a string or a number)."""
        value = self.raw.get(key, default)
        if not isinstance(value, bool):
            raise self.expected(key, "true or false", value)
        return value

    def text(self, key: str, default: str | None, check: Callable[[str], bool] | None = None,
             what: str = "a string") -> str | None:
        """A string (None when absent and the default is None); `check` may refuse its form."""
        value = self.raw.get(key, default)
        if value is None and default is None:
            return None
        if not isinstance(value, str) or (check is not None and not check(value)):
            raise self.expected(key, what, value)
        return value

    def strings(self, key: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        """A list of strings."""
        value = self.raw.get(key, list(default))
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.expected(key, "a list of strings", value)
        return tuple(value)

    def choice(self, key: str, default: T, choices: Iterable[T]) -> T:
        """One of `choices`."""
        choices = tuple(choices)
        value = self.raw.get(key, default)
        if value not in choices:
            raise self.expected(key, "one of " + ", ".join(map(str, choices)), value)
        return value

    # --- sub-tables -----------------------------------------------------------------------------

    def table(self, key: str, known: Iterable[str] | None) -> "Table":
        """The sub-table `key` (empty when absent)."""
        return Table(self.raw.get(key, {}), self.file, self.path(key), known)

    def tables(self, known: Iterable[str] | None) -> Iterator[tuple[str, "Table"]]:
        """Every value of this table as a named sub-table (for `[apps.<id>]`, scenes, experiments)."""
        for key, value in self.raw.items():
            yield key, Table(value, self.file, self.path(key), known)
