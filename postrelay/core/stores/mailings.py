"""The mailings store: records, the work queue, idempotency, per-recipient cooldowns and daily caps.

Keys (`postrelay.core.keys`, all on the queue Redis, never a cluster; scripts in `postrelay/core/lua/mailing_*.lua`):
- `pr:ml:{<id>}` — the record hash (status, request JSON, provider piece id, reason, attempts, …). The id is
  derived from the idempotency key (`postrelay.core.mailing.mailing_id`), so the record itself is the
  idempotency marker: creating it is one script that finds an existing record or writes a new one;
- `pr:ml:due` — sorted set of mailings the workers must work on, scored by when; a worker claims one by
  pushing its score past the lease (a killed worker's claim simply expires);
- `pr:ml:index` — sorted set of every mailing by creation time (`mailings list`, `GET /v1/mailings`);
- `pr:ml:cool:{<trigger>}:<recipient hash>` — a trigger's per-recipient cooldown marker (value: the mailing);
- `pr:ml:cap:<day>` and `pr:ml:cap:<day>:<trigger>` — pieces created per UTC day, in total and per trigger:
  reserved atomically before a piece is created, so the caps hold across any number of workers.

Sync functions serve the workers and the CLI; `a`-prefixed ones the receiver's asyncio client.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from postrelay.core import keys
from postrelay.core.replies import members, text, text_map
from postrelay.core.scripts import lua
from postrelay.core.stores import catalog

DUE = keys.MAILINGS_DUE
INDEX = keys.MAILINGS_INDEX
DAY = 86400
record_key = keys.mailing
cooldown_key = keys.mailing_cooldown
cap_key = keys.mailing_cap


def utc_day(now: float) -> str:
    """The UTC calendar day of `now`."""
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")


def iso(now: float) -> str:
    """ISO 8601 UTC with milliseconds."""
    return datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_fields(mid: str, request: dict[str, Any], fingerprint: str, origin: str, now: float, *,
               trigger: str | None = None, dry_run: bool = False, source: dict[str, Any] | None = None,
               provider_type: str = "", status: str = "queued") -> dict[str, str]:
    """The hash fields of a new mailing (queued, or already `failed` when it cannot be sent at all)."""
    fields = {"id": mid, "status": status, "created_ts": repr(now), "origin": origin, "provider": request["provider"],
              "provider_type": provider_type, "kind": request["kind"], "request": json.dumps(request),
              "fingerprint": fingerprint, "created_at": iso(now), "updated_at": iso(now), "attempts": "0",
              "dry_run": "1" if dry_run else "0", "trigger": trigger or ""}
    if source is not None:
        fields["source"] = json.dumps(source)
    return fields


def _create_args(fields: dict[str, str], now: float, retention: float, cooldown: tuple[str, float] | None,
                 ) -> tuple[list[str], list[Any]]:
    mid = fields["id"]
    marker, ttl = cooldown if cooldown else (keys.mailing(mid), 0)
    return ([keys.mailing(mid), DUE, INDEX, marker],
            [mid, json.dumps(fields), now, int(retention), int(ttl), "1" if fields["status"] == "queued" else "0"])


def _create_result(raw: list[Any]) -> dict[str, str]:
    out = [x.decode() if isinstance(x, bytes) else str(x) for x in raw]
    if out[0] == "existing":
        return {"result": "existing", "fingerprint": out[1], "status": out[2]}
    if out[0] == "cooldown":
        return {"result": "cooldown", "other": out[1]}
    return {"result": "created"}


def create(client: Redis, fields: dict[str, str], now: float, retention: float,
           cooldown: tuple[str, float] | None = None) -> dict[str, str]:
    """Store a new mailing unless one with its id exists or the recipient is cooling down.

    Returns `{"result": "created"}`, `{"result": "existing", "fingerprint", "status"}` or
    `{"result": "cooldown", "other": <mailing id>}`. `cooldown` is (marker key, seconds).
    """
    slots, args = _create_args(fields, now, retention, cooldown)
    return _create_result(lua("mailing_create")(client, slots, args))


async def acreate(client: AsyncRedis, fields: dict[str, str], now: float, retention: float,
                  cooldown: tuple[str, float] | None = None) -> dict[str, str]:
    """`create` on an asyncio client."""
    slots, args = _create_args(fields, now, retention, cooldown)
    return _create_result(await lua("mailing_create").register(client)(keys=slots, args=args))


def decode(raw: dict[Any, Any]) -> dict[str, Any] | None:
    """A record hash as the API's JSON view (None for an empty hash)."""
    if not raw:
        return None
    r = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
         for k, v in raw.items()}
    request = json.loads(r.get("request") or "{}")
    view: dict[str, Any] = {
        "mailing_id": r.get("id"), "status": r.get("status"), "origin": r.get("origin"),
        "provider": r.get("provider"), "provider_type": r.get("provider_type") or None, "kind": r.get("kind"),
        "piece_id": r.get("piece_id") or None, "stage": None, "reason": r.get("reason") or None,
        "http_status": int(r["http_status"]) if r.get("http_status") else None,
        "attempts": int(r.get("attempts") or 0), "dry_run": r.get("dry_run") == "1",
        "trigger": r.get("trigger") or None, "created_at": r.get("created_at"), "updated_at": r.get("updated_at"),
        "next_attempt_at": r.get("next_attempt_at") or None, "last_error": r.get("last_error") or None,
        "request": request,
    }
    if r.get("rendered"):
        view["rendered"] = json.loads(r["rendered"])
    view["link"] = json.loads(r["link"]) if r.get("link") else None
    return view


def get(client: Redis, mid: str) -> dict[str, Any] | None:
    """One mailing's view, or None."""
    return decode(client.hgetall(record_key(mid)))


async def aget(client: AsyncRedis, mid: str) -> dict[str, Any] | None:
    """`get` on an asyncio client."""
    return decode(await client.hgetall(record_key(mid)))


def listing(client: Redis, status: str | None = None, trigger: str | None = None,
            limit: int = 50, scan: int = 2000, provider: str | None = None) -> list[dict[str, Any]]:
    """The newest mailings first, optionally only one status, trigger or provider (among the newest `scan`)."""
    ids = members(client.zrevrange(INDEX, 0, scan - 1))
    pipe = client.pipeline(transaction=False)
    for mid in ids:
        pipe.hgetall(record_key(mid))
    views = [decode(raw) for raw in pipe.execute()]
    return [v for v in views if v and matches(v, status, provider, trigger)][:limit]


def matches(view: dict[str, Any], status: str | None = None, provider: str | None = None,
            trigger: str | None = None) -> bool:
    """True when a mailing's view passes the list filters (each optional)."""
    return ((not status or view["status"] == status) and (not provider or view["provider"] == provider)
            and (not trigger or view["trigger"] == trigger))


async def apage(client: AsyncRedis, cursor: str | None, limit: int, *, status: str | None = None,
                provider: str | None = None, trigger: str | None = None,
                budget: int = 2000) -> tuple[list[dict[str, Any]], str | None]:
    """One page of mailings, newest first, after `cursor` (the opaque cursors of `catalog.page`): (views,
    next cursor or None). Filters read the records; at most `budget` are read per page, so a rare filter
    answers a short (even empty) page with a cursor to continue. `BadQuery` for a foreign cursor."""
    out: list[dict[str, Any]] = []
    read = 0
    while True:
        chunk, nxt = await catalog.page(client, INDEX, cursor, min(200, max(limit, 50)))
        pipe = client.pipeline(transaction=False)
        for mid, _ in chunk:
            pipe.hgetall(record_key(mid))
        for i, ((mid, score), raw) in enumerate(zip(chunk, await pipe.execute(), strict=True)):
            read += 1
            view = decode(raw)
            if view is not None and matches(view, status, provider, trigger):
                out.append(view)
            if len(out) == limit or read >= budget:
                more = nxt is not None or i < len(chunk) - 1
                return out, (catalog.encode_cursor(score, mid) if more else None)
        if nxt is None:
            return out, None
        cursor = nxt


def claim(client: Redis, now: float, lease: float, limit: int = 10) -> list[str]:
    """Take up to `limit` due mailings for `lease` seconds (the shared `due_claim` script) and count an attempt
    for each, before any provider call: a claimer that dies lets them come due again when the lease runs out."""
    raw = lua("due_claim")(client, [DUE], [now, lease, limit])
    ids = [raw[i].decode() for i in range(0, len(raw), 2)]
    if ids:
        pipe = client.pipeline(transaction=False)
        for mid in ids:
            pipe.hincrby(keys.mailing(mid), "attempts", 1)
        pipe.execute()
    return ids


def raw_record(client: Redis, mid: str) -> dict[str, str]:
    """The record's fields as strings ({} when it expired)."""
    return text_map(client.hgetall(record_key(mid)))


def update(client: Redis, mid: str, fields: dict[str, Any], due: float | None = None,
           now: float | None = None) -> bool:
    """Change a queued mailing: an outcome (`due` None: it leaves the queue) or a retry at `due`."""
    strs = {k: ("" if v is None else str(v)) for k, v in fields.items()}
    strs["updated_at"] = iso(now if now is not None else time.time())
    return bool(lua("mailing_update")(client, [keys.mailing(mid), DUE], [mid, json.dumps(strs), "" if due is None else due]))


def reserve(client: Redis, mid: str, trigger: str | None, now: float, max_per_day: int,
            trigger_max: int) -> str:
    """Count this mailing against today's caps (once per mailing); 'ok' or the name of the full cap."""
    day = utc_day(now)
    result = lua("mailing_reserve")(client, [keys.mailing(mid), cap_key(day), cap_key(day, trigger or None)],
                                    [max_per_day, trigger_max, day, 2 * DAY, "1" if trigger else "0"])
    return result.decode() if isinstance(result, bytes) else str(result)


def release(client: Redis, mid: str, trigger: str | None) -> bool:
    """Give a reservation back (the provider refused the piece: nothing is mailed)."""
    day = client.hget(record_key(mid), "cap_day")
    if not day:
        return False
    day = text(day)
    return bool(lua("mailing_release")(client, [keys.mailing(mid), cap_key(day), cap_key(day, trigger or None)],
                                       ["1" if trigger else "0"]))


def used_today(client: Redis, now: float, trigger: str | None = None) -> int:
    """Pieces counted against today's cap (in total, or for one trigger)."""
    return int(client.get(cap_key(utc_day(now), trigger)) or 0)
