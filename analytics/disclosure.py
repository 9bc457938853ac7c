"""The disclosure rule of every count minirec shows a merchant about people: k-anonymous cells,
complementary suppression and rounding (`[privacy]` in minirec.toml sets k_min and round_to).
User insight and the aggregates of lookalike audiences both count through it."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Suppressor:
    """The disclosure rule of every count in the document.

    - primary: a cell of 1 to `k_min` - 1 users is suppressed (shown as suppressed, no number); an
      empty cell (0) describes nobody and is shown;
    - complementary: where cells add up to (or, multi-valued, bound) a shown total — a profile field,
      the segments, the lifecycle — the suppressed cells together must hold at least `k_min` users and be at least two,
      else the smallest shown cells are suppressed too — so total − shown never isolates a cell;
    - every number shown is rounded to the nearest `round_to`, so differences between overlapping
      aggregates (e.g. with and without a filter) do not give exact small counts."""

    k_min: int = 50
    round_to: int = 10

    def shown(self, count: float) -> int:
        """A count as shown (rounded to `round_to`)."""
        return int(self.round_to * math.floor(count / self.round_to + 0.5))

    def cells(self, counts: Mapping[str, int], partition: bool) -> dict[str, int | None]:
        """Each cell's shown count, or None where suppressed; `partition`: the cells add up to a total
        that is shown (complementary suppression applies)."""
        hidden = {name for name, n in counts.items() if 0 < n < self.k_min}  # 0 describes nobody
        if partition and hidden:
            for name in sorted((n for n in counts if n not in hidden and counts[n] > 0), key=lambda n: (counts[n], n)):
                if len(hidden) >= 2 and sum(counts[h] for h in hidden) >= self.k_min:
                    break
                hidden.add(name)
        return {name: None if name in hidden else self.shown(n) for name, n in counts.items()}
