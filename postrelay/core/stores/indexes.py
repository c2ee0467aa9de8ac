"""The console's indexes: per-campaign funnels and secondary indexes, maintained as events are applied.

For every event applied to a timeline, `ix_event` (Lua) updates, in the same atomic script as the timeline
(`postrelay.core.timeline`), a small index state of the piece and what follows from it:
- sorted sets of piece members (`<source>:<id>`) scored by the piece's first occurrence time, by source,
  campaign, current stage, recipient email and name word (`postrelay.core.keys.index_set`), and `pr:ix:all`;
- per campaign: `pr:ix:funnel:<c>` (pieces, and pieces per stage reached / event type had), `pr:ix:days:<c>`
  (`<stage>|<day>` arrivals) and `pr:ix:transit:<c>` (mailed -> processed_for_delivery, tenths of a day);
- `pr:ix:campaigns`, campaigns scored by their latest event.

Exact under duplicate, late and out-of-order events: the state only moves by max/min/first-wins steps and a
counter moves only when the state changes, so applying an event twice changes nothing and every piece counts
once in each stage it reached. A lifecycle stage is reached by an event of that stage or of a later one (a
delivered piece was mailed); `returned_to_sender` implies `mailed`; returned, cancelled, failed, re-routed and
engagement types (pURL/QR visits) count once per piece when the piece had one.

Where the state lives: in the piece hash when the mailpieces share the queue Redis (the usual case: one
script does timeline and indexes); when the mailpieces are on a Redis Cluster, in `pr:ix:state:{…}` on the
queue Redis, applied by a second script right after the timeline (idempotent, so a re-run batch is exact too).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from redis import Redis

from postrelay.core import keys
from postrelay.core.events import RANK, TERMINAL, CanonicalEvent, EventType
from postrelay.core.stores.piece_codec import CODE

_LIFE = [t for t in sorted(RANK, key=RANK.__getitem__) if t not in TERMINAL]
_RANKS = ", ".join(f"{t.value}={r}" for t, r in RANK.items())
_WORD = re.compile(r"\w+")
MAX_TOKENS = 6
MAX_FIELD = 200
# Fields of the index state (in the piece hash or `pr:ix:state:{…}`); `campaign`, `email`, `name` are plain
# attributes of the piece (the first non-empty value wins), the `ix_` ones are the index's own.
STATE_FIELDS = ("campaign", "email", "name", "ix_s", "ix_r", "ix_f", "ix_x", "ix_m", "ix_p", "ix_t")

# ix_event(state key, ARGV, offset): ARGV[o..o+10] = member, source, type, rank, terminal (0/1), occurred
# epoch, occurred day (YYYY-MM-DD), campaign, email (lower case), name, name words (space-separated).
INDEX_LUA = """
local IX = '""" + keys.INDEX_PREFIX + """:'
local LIFE = {""" + ", ".join(f"{{'{t.value}', {RANK[t]}}}" for t in _LIFE) + """}
local RANKS = {""" + _RANKS + """}
local TERMINAL = {""" + ", ".join(f"{t.value}=true" for t in TERMINAL) + """}
local RETURN_IMPLIES = """ + str(RANK[EventType.MAILED]) + """
local IX_CODE = {""" + ", ".join(f"{t}='{c}'" for t, c in CODE.items()) + """}
local IX_TYPE = {""" + ", ".join(f"{c}='{t}'" for t, c in CODE.items()) + """}

-- the flag set `ix_x`: type codes (one letter each, `postrelay.core.stores.piece_codec.CODE`) so the value stays short
-- in the piece hash (listpack); a set written before as `|name|name|` is read too
local function ix_flags(v)
  if string.sub(v, 1, 1) ~= '|' then return v end
  local out = ''
  for t in string.gmatch(v, '[^|]+') do out = out .. (IX_CODE[t] or '') end
  return out
end

local function ix_bucket(m, p)
  if m == nil or p == nil then return nil end
  local d = (p - m) / 86400
  if d < 0 then d = 0 end
  return string.format('%.1f', math.floor(d * 10 + 1e-9) / 10)
end

local function ix_event(st, a, o)
  local member, src, etype, day = a[o], a[o + 1], a[o + 2], a[o + 6]
  local rank, at = tonumber(a[o + 3]), tonumber(a[o + 5])
  local terminal = a[o + 4] == '1'
  local f = redis.call('HMGET', st, 'campaign', 'email', 'name', 'ix_s', 'ix_r', 'ix_f', 'ix_x', 'ix_m', 'ix_p', 'ix_t')
  local camp, email, name, stage = f[1] or '', f[2] or '', f[3] or '', f[4] or ''
  local reached, first = tonumber(f[5] or '0'), tonumber(f[6] or '')
  local flags, mailed, pfd, words = ix_flags(f[7] or ''), tonumber(f[8] or ''), tonumber(f[9] or ''), f[10] or ''
  if first == nil or at < first then first = at end
  local new_stage = stage
  if rank > 0 and not TERMINAL[stage] and rank > (RANKS[stage] or 0) then new_stage = etype end
  local new_reached = reached
  if rank > 0 and not terminal and rank > new_reached then new_reached = rank end
  if etype == 'returned_to_sender' and new_reached < RETURN_IMPLIES then new_reached = RETURN_IMPLIES end
  local new_flag = false
  if (terminal or rank == 0) and not string.find(flags, IX_CODE[etype], 1, true) then
    flags = flags .. IX_CODE[etype]
    new_flag = true
  end
  local old_bucket = ix_bucket(mailed, pfd)
  if etype == 'mailed' and (mailed == nil or at < mailed) then mailed = at end
  if etype == 'processed_for_delivery' and (pfd == nil or at < pfd) then pfd = at end
  local new_bucket = ix_bucket(mailed, pfd)
  local joined = false
  if camp == '' and a[o + 7] ~= '' then camp = a[o + 7]; joined = true end
  if email == '' and a[o + 8] ~= '' then email = a[o + 8] end
  if name == '' and a[o + 9] ~= '' then name = a[o + 9]; words = a[o + 10] end
  if camp ~= '' then
    local fk, dk, tk = IX .. 'funnel:' .. camp, IX .. 'days:' .. camp, IX .. 'transit:' .. camp
    local low = reached
    if joined then
      redis.call('HINCRBY', fk, 'pieces', 1)
      low = 0
      old_bucket = nil
      for c in string.gmatch(flags, '.') do
        local t = IX_TYPE[c]
        redis.call('HINCRBY', fk, t, 1)
        redis.call('HINCRBY', dk, t .. '|' .. day, 1)
      end
    elseif new_flag then
      redis.call('HINCRBY', fk, etype, 1)
      redis.call('HINCRBY', dk, etype .. '|' .. day, 1)
    end
    for _, s in ipairs(LIFE) do
      if s[2] > low and s[2] <= new_reached then
        redis.call('HINCRBY', fk, s[1], 1)
        redis.call('HINCRBY', dk, s[1] .. '|' .. day, 1)
      end
    end
    if old_bucket ~= new_bucket then
      if old_bucket and redis.call('HINCRBY', tk, old_bucket, -1) <= 0 then redis.call('HDEL', tk, old_bucket) end
      if new_bucket then redis.call('HINCRBY', tk, new_bucket, 1) end
    end
    redis.call('ZADD', IX .. 'campaigns', 'GT', at, camp)
    redis.call('ZADD', IX .. 'camp:' .. camp, first, member)
  end
  if new_stage ~= stage and stage ~= '' then redis.call('ZREM', IX .. 'stage:' .. stage, member) end
  if new_stage ~= '' then redis.call('ZADD', IX .. 'stage:' .. new_stage, first, member) end
  redis.call('ZADD', IX .. 'all', first, member)
  redis.call('ZADD', IX .. 'src:' .. src, first, member)
  if email ~= '' then redis.call('ZADD', IX .. 'email:' .. email, first, member) end
  for w in string.gmatch(words, '[^ ]+') do redis.call('ZADD', IX .. 'name:' .. w, first, member) end
  local out = {'ix_s', new_stage, 'ix_r', new_reached, 'ix_f', first, 'ix_x', flags}
  if camp ~= '' then table.insert(out, 'campaign'); table.insert(out, camp) end
  if email ~= '' then table.insert(out, 'email'); table.insert(out, email) end
  if name ~= '' then table.insert(out, 'name'); table.insert(out, name); table.insert(out, 'ix_t'); table.insert(out, words) end
  if mailed then table.insert(out, 'ix_m'); table.insert(out, mailed) end
  if pfd then table.insert(out, 'ix_p'); table.insert(out, pfd) end
  redis.call('HSET', st, unpack(out))
end
"""
ARGC = 11

# The standalone script (mailpieces on another Redis, and `postrelay reindex`).
# KEYS: index state. ARGV: ix_event's 11 arguments, then the retention in seconds (0: keep).
_INDEX_ONE = INDEX_LUA + """
ix_event(KEYS[1], ARGV, 1)
local ttl = tonumber(ARGV[12])
if ttl > 0 then redis.call('EXPIRE', KEYS[1], ttl) end
return 1
"""


def campaign_of(event: CanonicalEvent) -> str:
    """The piece's campaign: `mailpiece.campaign_id`, else metadata `campaign` / `campaign_id` ('' if none)."""
    value: Any = event.mailpiece.campaign_id or event.metadata.get("campaign") or event.metadata.get("campaign_id")
    return str(value)[:MAX_FIELD] if isinstance(value, str | int) and not isinstance(value, bool) and value != "" else ""


def name_words(name: str) -> list[str]:
    """The lower-case words of a recipient name, as searched (`q=`): at most 6, each at most 40 characters."""
    return list(dict.fromkeys(w[:40] for w in _WORD.findall(name.lower())))[:MAX_TOKENS]


def normalize_email(email: str | None) -> str:
    """An email as indexed and searched: trimmed, lower case."""
    return (email or "").strip().lower()[:MAX_FIELD]


def index_args(event: CanonicalEvent) -> list[Any]:
    """ix_event's 11 arguments for one event."""
    etype = EventType(event.type)
    name = (event.recipient.name or "").strip()[:MAX_FIELD]
    words = " ".join(name_words(name)) if name else ""
    return [keys.piece_member(*event.piece_key), event.source, etype.value, RANK.get(etype, 0),
            int(etype in TERMINAL), event.occurred_at.timestamp(), event.occurred_at.date().isoformat(),
            campaign_of(event), normalize_email(event.recipient.email), name, words]


class IndexWriter:
    """Applies events to the index state kept on the queue Redis (mailpieces on a Redis Cluster; reindex)."""

    def __init__(self, redis: Redis, retention: float) -> None:
        self.redis = redis
        self.retention = retention
        self._script = redis.register_script(_INDEX_ONE)

    def apply_many(self, events: Sequence[CanonicalEvent], state_in_piece: bool = False) -> None:
        """Index `events` in order, in one pipeline. `state_in_piece`: the state is the piece hash (same Redis)."""
        if not events:
            return
        pipe = self.redis.pipeline(transaction=False)
        for event in events:
            state = keys.piece(*event.piece_key) if state_in_piece else keys.index_state(*event.piece_key)
            self._script(keys=[state], args=[*index_args(event), int(self.retention)], client=pipe)
        pipe.execute()
