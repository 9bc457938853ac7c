"""Forward-decayed counters: exponential time decay that never rewrites old scores.

A counter decayed with half-life H holds, at time `now`, Σ wᵢ·2^(−(now − tᵢ)/H). Forward decay
(Cormode et al., ICDE 2009) stores instead s = Σ wᵢ·2^((tᵢ − t0)/H) for a fixed reference time t0,
so an event is a single ZINCRBY and

    decayed(now) = s · 2^(−(now − t0)/H),

the same factor for every member: ranking a sorted set by its raw score is ranking by decayed score.

Overflow: the stored terms grow as 2^((t − t0)/H) and a double overflows at 2^1024. t0 is set to
the time of the first write of an app, and when an event would need an exponent above
`REBASE_EXPONENT` (500: about 500 days at H = 1 day) the script below rebases atomically: it moves
t0 to that event's time and multiplies every score by 2^(−Δ/H), dropping members whose decayed score
fell below `DROP_BELOW`. Event times are clamped to `now + MAX_SKEW_S`, so a client clock far in the
future can neither overflow a score nor force a rebase. Old events give exponents below zero,
which only underflow harmlessly towards 0.
"""

from __future__ import annotations

import math

#: Rebase when (t − t0)/H would exceed this (2^500 ≈ 3e150: far from overflow, far from precision loss).
REBASE_EXPONENT = 500.0
#: Members whose decayed score falls below this are dropped at a rebase.
DROP_BELOW = 1e-9
#: Event times further than this ahead of the server's clock count as `now + MAX_SKEW_S`.
MAX_SKEW_S = 300.0


def decayed(score: float, t0: float, now: float, half_life_s: float) -> float:
    """A stored forward score seen at `now`: score · 2^(−(now − t0)/H)."""
    return score * math.exp2(-(now - t0) / half_life_s)


def reference_decayed(events: list[tuple[float, float]], now: float, half_life_s: float) -> float:
    """Plain backward decay Σ w·2^(−(now − t)/H) of (weight, ts) pairs: the reference answer in tests."""
    return sum(w * math.exp2(-(now - t) / half_life_s) for w, t in events)


# The increment stored for an event of weight w at ts is w · 2^((ts − t0)/H), computed in Redis:
# KEYS[1] = t0 key, KEYS[2..] = the decayed sorted sets of one app (one hash tag: one slot).
# ARGV = now, half_life_s, rebase_exponent, drop_below, cap (members kept per set),
#        then (set index ≥ 2, member, weight, ts) quadruples.
# Reading t0 inside the script makes increments and rebases atomic with respect to each other, so
# several serving processes can never add a term computed against a t0 another one just moved.
INCREMENT_SCRIPT = """
local now = tonumber(ARGV[1])
local hl = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local drop_below = tonumber(ARGV[4])
local cap = tonumber(ARGV[5])
local t0 = tonumber(redis.call('GET', KEYS[1]))
if not t0 then
  t0 = now
  redis.call('SET', KEYS[1], string.format('%.17g', t0))
end
local newest = t0
for i = 6, #ARGV, 4 do
  local ts = tonumber(ARGV[i + 3])
  if ts > newest then newest = ts end
end
if (newest - t0) / hl > limit then
  local factor = 2 ^ (-(newest - t0) / hl)
  for k = 2, #KEYS do
    local entries = redis.call('ZRANGE', KEYS[k], 0, -1, 'WITHSCORES')
    for j = 1, #entries, 2 do
      local s = tonumber(entries[j + 1]) * factor
      if s * (2 ^ (-(now - newest) / hl)) < drop_below then
        redis.call('ZREM', KEYS[k], entries[j])
      else
        redis.call('ZADD', KEYS[k], string.format('%.17g', s), entries[j])
      end
    end
  end
  t0 = newest
  redis.call('SET', KEYS[1], string.format('%.17g', t0))
end
for i = 6, #ARGV, 4 do
  local inc = tonumber(ARGV[i + 2]) * 2 ^ ((tonumber(ARGV[i + 3]) - t0) / hl)
  if inc > 0 then
    redis.call('ZINCRBY', KEYS[tonumber(ARGV[i])], string.format('%.17g', inc), ARGV[i + 1])
  end
end
for k = 2, #KEYS do
  redis.call('ZREMRANGEBYRANK', KEYS[k], 0, -(cap + 1))
end
return string.format('%.17g', t0)
"""
