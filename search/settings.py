"""Per-app search settings: `ARTIFACTS/<app>/search.toml`, re-read when the file changes.

    personal_weight = 0.2        # share of the user's affinity in the result score (0 = off)
    blocklist = ["代购", "违禁"]   # queries containing any of these never appear in hot / suggest / discover
    min_coverage = 0.5           # below this share of the query's characters matching the index, fall back
    interpret = true             # read pinyin, correct typos and homophones (search/interpret.py)

The file sits next to the app's bundles so that operations can edit a blocklist for every replica
without retraining or restarting; a missing file means the defaults, a broken one is reported and
the last good settings stay in force.
"""

from __future__ import annotations

import logging
import os
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from search.suggest import key_of

log = logging.getLogger("minirec.search")

FILE_NAME = "search.toml"
#: How often the file's modification time is checked (seconds).
CHECK_EVERY_S = 1.0


@dataclass(frozen=True)
class SearchSettings:
    personal_weight: float = 0.2
    blocklist: tuple[str, ...] = ()
    min_coverage: float = 0.5
    interpret: bool = True
    _blocked_keys: tuple[str, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_blocked_keys", tuple(k for k in map(key_of, self.blocklist) if k))

    @classmethod
    def from_dict(cls, raw: dict[str, Any], where: str) -> "SearchSettings":
        """Validate a parsed search.toml; raises ValueError naming the bad key."""
        known = {"personal_weight", "blocklist", "min_coverage", "interpret"}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"{where}: unknown keys {sorted(unknown)} (known: {sorted(known)})")
        weight = float(raw.get("personal_weight", cls.personal_weight))
        coverage = float(raw.get("min_coverage", cls.min_coverage))
        if not 0 <= weight <= 10:
            raise ValueError(f"{where}: personal_weight must be between 0 and 10, got {weight}")
        if not 0 <= coverage <= 1:
            raise ValueError(f"{where}: min_coverage must be between 0 and 1, got {coverage}")
        words = raw.get("blocklist", [])
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise ValueError(f"{where}: blocklist must be a list of strings")
        interpret = raw.get("interpret", cls.interpret)
        if not isinstance(interpret, bool):
            raise ValueError(f"{where}: interpret must be true or false, got {interpret!r}")
        return cls(weight, tuple(words), coverage, interpret)

    def blocked(self, query: str) -> bool:
        """True if the query contains a blocked word (compared without case, width or spaces)."""
        if not self._blocked_keys:
            return False
        key = key_of(query)
        return any(word in key for word in self._blocked_keys)


class SettingsFile:
    """The settings of one app, reloaded when `search.toml` changes (checked at most once a second)."""

    def __init__(self, app_dir: Path) -> None:
        self.path = app_dir / FILE_NAME
        self._settings = SearchSettings()
        self._mtime: float | None = None
        self._checked = 0.0
        self.last_error: str | None = None

    def get(self) -> SearchSettings:
        now = time.monotonic()
        if now - self._checked >= CHECK_EVERY_S:
            self._checked = now
            self._reload()
        return self._settings

    def _reload(self) -> None:
        try:
            mtime = os.stat(self.path).st_mtime
        except FileNotFoundError:
            if self._mtime is not None:
                self._settings, self._mtime = SearchSettings(), None
            return
        except OSError as exc:
            self.last_error = str(exc)
            return
        if mtime == self._mtime:
            return
        try:
            raw = tomllib.loads(self.path.read_text(encoding="utf-8"))
            self._settings = SearchSettings.from_dict(raw, str(self.path))
            self.last_error = None
        except (OSError, ValueError, tomllib.TOMLDecodeError) as exc:
            self.last_error = str(exc)
            log.error("%s not applied, keeping the previous search settings: %s", self.path, exc)
        self._mtime = mtime
