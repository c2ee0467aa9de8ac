"""The console's indexes: per-campaign funnels and secondary indexes, maintained as events are applied.

For every event applied to a timeline, `ix_event` (`postrelay/core/lua/_index_event.lua`) updates, in the
same atomic script as the timeline (`postrelay.core.timeline`), a small index state of the piece and what follows from it:
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
from postrelay.core.scripts import Lua, lua
from postrelay.core.stores.piece_codec import CODE

_LIFE = [t for t in sorted(RANK, key=RANK.__getitem__) if t not in TERMINAL]
_WORD = re.compile(r"\w+")
MAX_TOKENS = 6
MAX_FIELD = 200
# Fields of the index state (in the piece hash or `pr:ix:state:{…}`); `campaign`, `email`, `name` are plain
# attributes of the piece (the first non-empty value wins), the `ix_` ones are the index's own.
STATE_FIELDS = ("campaign", "email", "name", "ix_s", "ix_r", "ix_f", "ix_x", "ix_m", "ix_p", "ix_t")

# The constants of `postrelay/core/lua/_index_event.lua` (the console's index, also inside `timeline_apply.lua`)
LUA_CONSTANTS: dict[str, Any] = {
    "IX_PREFIX": keys.INDEX_PREFIX + ":",
    "IX_LIFE": [[t.value, RANK[t]] for t in _LIFE],
    "IX_RANKS": {t.value: r for t, r in RANK.items()},
    "IX_TERMINAL": {t.value: True for t in sorted(TERMINAL)},
    "IX_RETURN_IMPLIES": RANK[EventType.MAILED],
    "IX_CODE": dict(CODE),
    "IX_TYPE": {c: t for t, c in CODE.items()},
}
ARGC = 11  # index_args' length


def index_script() -> Lua:
    """`index_apply.lua` (mailpieces on another Redis, and `postrelay reindex`)."""
    return lua("index_apply", **LUA_CONSTANTS)


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
        self._script = index_script()

    def apply_many(self, events: Sequence[CanonicalEvent], state_in_piece: bool = False) -> None:
        """Index `events` in order, in one pipeline. `state_in_piece`: the state is the piece hash (same Redis)."""
        if not events:
            return
        pipe = self.redis.pipeline(transaction=False)
        for event in events:
            state = keys.piece(*event.piece_key) if state_in_piece else keys.index_state(*event.piece_key)
            self._script(pipe, keys=[state], args=[*index_args(event), int(self.retention)])
        pipe.execute()
