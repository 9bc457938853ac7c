"""Per-app search settings (`ARTIFACTS/<app>/search.toml`) as one immutable value.

The file is read, checked and re-read when it changes by `serving/server_config.py`
(`parse_search_settings`, `SearchSettingsFile`); this module only holds what search reads:

    personal_weight   share of the user's affinity in the result score (0 = off)
    blocklist         queries containing any of these never appear in hot / suggest / discover
    min_coverage      below this share of the query's characters matching the index, fall back
    interpret         read pinyin, correct typos and homophones (search/interpret.py)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from search.suggest import key_of


@dataclass(frozen=True)
class SearchSettings:
    personal_weight: float = 0.2
    blocklist: tuple[str, ...] = ()
    min_coverage: float = 0.5
    interpret: bool = True
    _blocked_keys: tuple[str, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_blocked_keys", tuple(k for k in map(key_of, self.blocklist) if k))

    def blocked(self, query: str) -> bool:
        """True if the query contains a blocked word (compared without case, width or spaces)."""
        if not self._blocked_keys:
            return False
        key = key_of(query)
        return any(word in key for word in self._blocked_keys)
