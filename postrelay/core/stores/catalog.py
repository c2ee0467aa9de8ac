"""Reading the console's indexes (`postrelay.core.stores.indexes`): search, campaign lists and funnels, CSV rows.

Everything here is a few Redis round trips whatever the data size: lists page through sorted sets (newest
first, by the piece's first occurrence) with an opaque cursor; several filters intersect their sets once
into a short-lived key that the following pages reuse. Asyncio clients (the receiver); the index keys live on
the queue Redis, the piece hashes on the mailpiece store (the same Redis unless it is a cluster).
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from postrelay.core import keys
from postrelay.core.events import RANK, TERMINAL, EventType
from postrelay.core.stores.indexes import name_words, normalize_email
from postrelay.core.stores.piece_codec import summary as piece_summary

SEARCH_TTL = 30  # seconds an intersection of several filters is kept for the following pages
LIFECYCLE = [t.value for t in sorted(RANK, key=RANK.__getitem__) if t not in TERMINAL]
OUTCOMES = [t.value for t in TERMINAL] + [EventType.RE_ROUTED.value]
ENGAGEMENT = [EventType.PURL_OPENED.value, EventType.PURL_COMPLETED.value]


@dataclass(frozen=True)
class Stores:
    """Where to read: the queue Redis (indexes), the mailpiece store, whether they differ, the known sources."""

    queue: Any
    pieces: Any
    sources: tuple[str, ...]

    @property
    def split(self) -> bool:
        """True when the mailpieces live on another Redis (the index state then lives on the queue Redis)."""
        return self.pieces is not self.queue


class BadQuery(ValueError):
    """A filter or cursor that cannot be used; the message says why."""


@dataclass(frozen=True)
class Filters:
    """What `GET /v1/mailpieces` narrows by (all optional; together they intersect)."""

    q: str = ""
    email: str = ""
    campaign: str = ""
    stage: str = ""
    source: str = ""
    since: float | None = None


def encode_cursor(score: float, member: str) -> str:
    """An opaque cursor naming the last item of a page."""
    return base64.urlsafe_b64encode(json.dumps([repr(float(score)), member]).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    """(score, member) of a cursor; BadQuery if it was not made by `encode_cursor`."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        score, member = json.loads(raw)
        after = float(score)
        if math.isnan(after):  # Redis refuses a NaN bound ("min or max is not a float"): it was a 500
            raise ValueError(score)
        return after, str(member)
    except (ValueError, TypeError) as exc:
        raise BadQuery("cursor is not one this API returned") from exc


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def page(redis: Any, key: str, cursor: str | None, limit: int, since: float | None = None,
               ascending: bool = False) -> tuple[list[tuple[str, float]], str | None]:
    """One page of a sorted set after `cursor`: highest score first (ties: member descending), or lowest
    first with `ascending` (ties: member ascending). Returns ([(member, score)], next cursor or None).

    `since`: only scores from then on (descending order only).
    """
    after: tuple[float, str] | None = decode_cursor(cursor) if cursor else None
    out: list[tuple[str, float]] = []
    offset, want = 0, limit + 1
    while len(out) < want:
        if ascending:
            low = repr(after[0]) if after else "-inf"
            batch = await redis.zrangebyscore(key, low, "+inf", start=offset, num=want + 16, withscores=True)
        else:
            top = repr(after[0]) if after else "+inf"
            low = repr(float(since)) if since is not None else "-inf"
            batch = await redis.zrevrangebyscore(key, top, low, start=offset, num=want + 16, withscores=True)
        for raw, score in batch:
            member = _text(raw)
            if after is not None and score == after[0] and (member <= after[1] if ascending else member >= after[1]):
                continue  # the previous page's ties
            out.append((member, float(score)))
        offset += len(batch)
        if len(batch) < want + 16:
            break
    more = len(out) > limit
    out = out[:limit]
    return out, (encode_cursor(out[-1][1], out[-1][0]) if more and out else None)


async def _matching_key(redis: Any, f: Filters, sources: tuple[str, ...]) -> str | None:
    """The sorted set holding exactly the pieces matching `f` (None: certainly none)."""
    sets: list[str] = []
    if f.email:
        sets.append(keys.index_set("email", normalize_email(f.email)))
    if f.campaign:
        sets.append(keys.index_set("camp", f.campaign))
    if f.stage:
        sets.append(keys.index_set("stage", f.stage))
    if f.source:
        sets.append(keys.index_set("src", f.source))
    q = f.q.strip()
    if q:
        q_key = await _q_key(redis, q, sources)
        if q_key is None:
            return None
        sets.append(q_key)
    if not sets:
        return keys.INDEX_ALL
    if len(sets) == 1:
        return sets[0]
    tmp = f"{keys.INDEX_PREFIX}:tmp:" + hashlib.sha1("\x1f".join(sorted(sets)).encode()).hexdigest()
    pipe = redis.pipeline(transaction=False)
    pipe.zinterstore(tmp, sets, aggregate="MAX")
    pipe.expire(tmp, SEARCH_TTL)
    await pipe.execute()
    return tmp


async def _q_key(redis: Any, q: str, sources: tuple[str, ...]) -> str | None:
    """`q=`: an email, a provider mailpiece id (any source) or the words of a recipient name (all of them)."""
    if "@" in q:
        return keys.index_set("email", normalize_email(q))
    pipe = redis.pipeline(transaction=False)
    members = [keys.piece_member(src, q) for src in sources]
    for m in members:
        pipe.zscore(keys.INDEX_ALL, m)
    scores = await pipe.execute()
    ids = {m: s for m, s in zip(members, scores, strict=True) if s is not None}
    words = [keys.index_set("name", w) for w in name_words(q)]
    if not ids and len(words) == 1:
        return words[0]  # one name word: its own set, nothing to combine
    if not ids and not words:
        return None
    digest = hashlib.sha1(q.encode()).hexdigest()
    tmp = f"{keys.INDEX_PREFIX}:tmp:q:{digest}"
    pipe = redis.pipeline(transaction=False)
    pipe.delete(tmp)
    if words:
        pipe.zinterstore(tmp, words, aggregate="MAX")
    if ids:
        pipe.zadd(tmp, ids)
    pipe.expire(tmp, SEARCH_TTL)
    await pipe.execute()
    return tmp


async def search(stores: Any, f: Filters, cursor: str | None, limit: int) -> tuple[list[dict[str, Any]], str | None]:
    """Pieces matching `f`, newest first: ([summary], next cursor)."""
    key = await _matching_key(stores.queue, f, stores.sources)
    if key is None:
        return [], None
    members, nxt = await page(stores.queue, key, cursor, limit, f.since)
    return await summaries(stores, [m for m, _ in members]), nxt


_SUMMARY = ("stage", "stage_at", "kind", "country", "campaign", "email", "name", "ix_f", "ix_s")


def _summary_row(raw: dict[bytes, bytes]) -> list[Any]:
    """The `_SUMMARY` values of a piece hash in either mailpiece layout (None where absent)."""
    if not raw:
        return [None] * len(_SUMMARY)
    derived = piece_summary(raw)
    return [derived[k] if k in derived else raw.get(k.encode()) for k in _SUMMARY]


async def summaries(stores: Any, members: list[str]) -> list[dict[str, Any]]:
    """The list view of pieces (members `<source>:<id>`); pieces whose timeline expired are left out."""
    if not members:
        return []
    split = [m.split(":", 1) for m in members]
    if stores.split:
        qpipe = stores.queue.pipeline(transaction=False)
        ppipe = stores.pieces.pipeline(transaction=False)
        for src, pid in split:
            qpipe.hmget(keys.index_state(src, pid), *_SUMMARY)
            ppipe.hgetall(keys.piece(src, pid))
        states, raws = await qpipe.execute(), await ppipe.execute()
        pieces = [_summary_row(raw) for raw in raws]
        rows = [[p if p is not None else s for p, s in zip(pc, st, strict=True)] for pc, st in zip(pieces, states,
                                                                                                  strict=True)]
    else:
        pipe = stores.pieces.pipeline(transaction=False)
        for src, pid in split:
            pipe.hgetall(keys.piece(src, pid))
        rows = [_summary_row(raw) for raw in await pipe.execute()]
    out = []
    for (src, pid), row in zip(split, rows, strict=True):
        v = {k: (_text(x) if x is not None else None) for k, x in zip(_SUMMARY, row, strict=True)}
        if v["ix_f"] is None and v["stage_at"] is None:
            continue
        first = datetime.fromtimestamp(float(v["ix_f"]), UTC).isoformat() if v["ix_f"] else None
        out.append({"source": src, "id": pid, "kind": v["kind"], "country": v["country"],
                    "stage": v["stage"] or v["ix_s"] or None, "stage_at": v["stage_at"], "campaign": v["campaign"],
                    "name": v["name"], "email": v["email"], "first_event_at": first})
    return out


async def campaigns(stores: Any, cursor: str | None, limit: int) -> tuple[list[dict[str, Any]], str | None]:
    """Campaigns, latest activity first, with their piece counts: ([row], next cursor)."""
    items, nxt = await page(stores.queue, keys.INDEX_CAMPAIGNS, cursor, limit)
    pipe = stores.queue.pipeline(transaction=False)
    for name, _ in items:
        pipe.hmget(keys.campaign_funnel(name), "pieces", "mailed", "delivered", "returned_to_sender")
    counts = await pipe.execute() if items else []
    rows = []
    for (name, score), c in zip(items, counts, strict=True):
        pieces, mailed, delivered, returned = (int(x or 0) for x in c)
        rows.append({"id": name, "pieces": pieces, "mailed": mailed, "delivered": delivered, "returned": returned,
                     "last_event_at": datetime.fromtimestamp(score, UTC).isoformat()})
    return rows, nxt


def _median(histogram: dict[str, int]) -> float | None:
    """The median of a histogram {value (str): count}, as the lower middle value."""
    total = sum(histogram.values())
    if not total:
        return None
    seen = 0
    for value in sorted(histogram, key=float):
        seen += histogram[value]
        if seen * 2 >= total:
            return float(value)
    return None  # pragma: no cover


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


async def campaign(stores: Any, campaign_id: str) -> dict[str, Any] | None:
    """A campaign's funnel, outcomes, engagement, arrivals per day and median transit; None if unknown."""
    pipe = stores.queue.pipeline(transaction=False)
    pipe.zscore(keys.INDEX_CAMPAIGNS, campaign_id)
    pipe.hgetall(keys.campaign_funnel(campaign_id))
    pipe.hgetall(keys.campaign_days(campaign_id))
    pipe.hgetall(keys.campaign_transit(campaign_id))
    last, funnel_raw, days_raw, transit_raw = await pipe.execute()
    if last is None:
        return None
    counts = {_text(k): int(v) for k, v in funnel_raw.items()}
    arrivals: dict[str, dict[str, int]] = {}
    for k, v in days_raw.items():
        stage, _, day = _text(k).partition("|")
        arrivals.setdefault(stage, {})[day] = int(v)
    transit = {_text(k): int(v) for k, v in transit_raw.items() if int(v) > 0}
    mailed = counts.get("mailed", 0)
    return {
        "id": campaign_id,
        "pieces": counts.get("pieces", 0),
        "last_event_at": datetime.fromtimestamp(float(last), UTC).isoformat(),
        "funnel": {s: counts.get(s, 0) for s in LIFECYCLE},
        "outcomes": {s: counts.get(s, 0) for s in OUTCOMES},
        "engagement": {s: counts.get(s, 0) for s in ENGAGEMENT},
        "rates": {"returned": _rate(counts.get(EventType.RETURNED_TO_SENDER.value, 0), mailed),
                  "visited": _rate(counts.get(EventType.PURL_OPENED.value, 0), mailed),
                  "completed": _rate(counts.get(EventType.PURL_COMPLETED.value, 0), mailed),
                  "delivered": _rate(counts.get(EventType.DELIVERED.value, 0), mailed)},
        "arrivals": {s: dict(sorted(d.items())) for s, d in sorted(arrivals.items())},
        "median_days_mailed_to_processed": _median(transit),
        "transit_histogram": dict(sorted(transit.items(), key=lambda kv: float(kv[0]))),
    }
