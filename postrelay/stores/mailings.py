"""The mailings store: records, the work queue, idempotency, per-recipient cooldowns and daily caps.

Keys (all on the queue Redis, never a cluster):
- `pr:ml:{<id>}` — the record hash (status, request JSON, provider piece id, reason, attempts, …). The id is
  derived from the idempotency key (`postrelay.mailing.mailing_id`), so the record itself is the
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

PREFIX = "pr:ml"
DUE = f"{PREFIX}:due"
INDEX = f"{PREFIX}:index"
DAY = 86400

# KEYS: record, due, index, cooldown marker (the record key when there is none)
# ARGV: id, fields (json object of strings), now, retention s, cooldown s (0 = none), queue ('1' = due now)
# Returns {'existing', fingerprint, status} | {'cooldown', other mailing id} | {'created'}
_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  local r = redis.call('HMGET', KEYS[1], 'fingerprint', 'status')
  return {'existing', r[1] or '', r[2] or ''}
end
if tonumber(ARGV[5]) > 0 then
  local other = redis.call('GET', KEYS[4])
  if other then return {'cooldown', other} end
end
local fields = cjson.decode(ARGV[2])
for k, v in pairs(fields) do redis.call('HSET', KEYS[1], k, v) end
redis.call('EXPIRE', KEYS[1], ARGV[4])
if ARGV[6] == '1' then redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1]) end
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', tonumber(ARGV[3]) - tonumber(ARGV[4]))
if tonumber(ARGV[5]) > 0 then redis.call('SET', KEYS[4], ARGV[1], 'EX', ARGV[5]) end
return {'created'}
"""
# KEYS: due. ARGV: now, lease s, limit. Claims due ids by pushing their score past the lease; counts attempts.
_CLAIM = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do
  redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[2]), id)
  redis.call('HINCRBY', 'pr:ml:{' .. id .. '}', 'attempts', 1)
end
return ids
"""
# KEYS: record, due. ARGV: id, fields json, due time ('' = done: leave the queue).
# Only a queued mailing changes (a stale worker never overwrites an outcome). Returns 1 when applied.
_UPDATE = """
if redis.call('HGET', KEYS[1], 'status') ~= 'queued' then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return 0
end
for k, v in pairs(cjson.decode(ARGV[2])) do redis.call('HSET', KEYS[1], k, v) end
if ARGV[3] == '' then redis.call('ZREM', KEYS[2], ARGV[1]) else redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1]) end
return 1
"""
# KEYS: record, day counter, trigger day counter (the day counter again when there is no trigger)
# ARGV: max per day (0 = none), trigger max per day (0 = none), day, counter ttl, has trigger ('1'/'0')
# Returns 'ok' (reserved now or by an earlier attempt) or the name of the cap that is full.
_RESERVE = """
if redis.call('HEXISTS', KEYS[1], 'cap_day') == 1 then return 'ok' end
local total = tonumber(redis.call('GET', KEYS[2]) or '0')
if tonumber(ARGV[1]) > 0 and total >= tonumber(ARGV[1]) then return 'max_per_day' end
if ARGV[5] == '1' then
  local mine = tonumber(redis.call('GET', KEYS[3]) or '0')
  if tonumber(ARGV[2]) > 0 and mine >= tonumber(ARGV[2]) then return 'trigger_max_per_day' end
  redis.call('INCR', KEYS[3])
  redis.call('EXPIRE', KEYS[3], ARGV[4])
end
redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call('HSET', KEYS[1], 'cap_day', ARGV[3])
return 'ok'
"""
# KEYS: record, day counter, trigger day counter. ARGV: has trigger. Gives a reservation back (nothing mailed).
_RELEASE = """
if redis.call('HEXISTS', KEYS[1], 'cap_day') == 0 then return 0 end
redis.call('HDEL', KEYS[1], 'cap_day')
if tonumber(redis.call('GET', KEYS[2]) or '0') > 0 then redis.call('DECR', KEYS[2]) end
if ARGV[1] == '1' and tonumber(redis.call('GET', KEYS[3]) or '0') > 0 then redis.call('DECR', KEYS[3]) end
return 1
"""


def record_key(mid: str) -> str:
    """The hash of one mailing (the `_CLAIM` script builds the same name)."""
    return f"{PREFIX}:{{{mid}}}"


def cooldown_key(trigger: str, recipient: str) -> str:
    """A trigger's cooldown marker for one recipient (hashed address)."""
    return f"{PREFIX}:cool:{{{trigger}}}:{recipient}"


def cap_key(day: str, trigger: str | None = None) -> str:
    """Pieces created on a UTC day (`YYYY-MM-DD`), in total or for one trigger."""
    return f"{PREFIX}:cap:{day}" + (f":{trigger}" if trigger else "")


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
    marker, ttl = cooldown if cooldown else (record_key(mid), 0)
    return ([record_key(mid), DUE, INDEX, marker],
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
    keys, args = _create_args(fields, now, retention, cooldown)
    return _create_result(client.eval(_CREATE, len(keys), *keys, *args))


async def acreate(client: AsyncRedis, fields: dict[str, str], now: float, retention: float,
                  cooldown: tuple[str, float] | None = None) -> dict[str, str]:
    """`create` on an asyncio client."""
    keys, args = _create_args(fields, now, retention, cooldown)
    return _create_result(await client.eval(_CREATE, len(keys), *keys, *args))  # type: ignore[misc]


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
    if r.get("link"):
        view["link"] = json.loads(r["link"])
    return view


def get(client: Redis, mid: str) -> dict[str, Any] | None:
    """One mailing's view, or None."""
    return decode(client.hgetall(record_key(mid)))


async def aget(client: AsyncRedis, mid: str) -> dict[str, Any] | None:
    """`get` on an asyncio client."""
    return decode(await client.hgetall(record_key(mid)))  # type: ignore[misc]


def _filter(views: list[dict[str, Any] | None], status: str | None, trigger: str | None,
            limit: int) -> list[dict[str, Any]]:
    out = [v for v in views if v and (not status or v["status"] == status) and (not trigger or v["trigger"] == trigger)]
    return out[:limit]


def listing(client: Redis, status: str | None = None, trigger: str | None = None,
            limit: int = 50, scan: int = 2000) -> list[dict[str, Any]]:
    """The newest mailings first, optionally only one status or trigger (among the newest `scan`)."""
    ids = [i.decode() for i in client.zrevrange(INDEX, 0, scan - 1)]
    pipe = client.pipeline(transaction=False)
    for mid in ids:
        pipe.hgetall(record_key(mid))
    return _filter([decode(raw) for raw in pipe.execute()], status, trigger, limit)


async def alisting(client: AsyncRedis, status: str | None = None, trigger: str | None = None,
                   limit: int = 50, scan: int = 2000) -> list[dict[str, Any]]:
    """`listing` on an asyncio client."""
    ids = [i.decode() for i in await client.zrevrange(INDEX, 0, scan - 1)]
    pipe = client.pipeline(transaction=False)
    for mid in ids:
        pipe.hgetall(record_key(mid))
    return _filter([decode(raw) for raw in await pipe.execute()], status, trigger, limit)


def claim(client: Redis, now: float, lease: float, limit: int = 10) -> list[str]:
    """Take up to `limit` due mailings for `lease` seconds (each claim counts an attempt)."""
    return [i.decode() for i in client.eval(_CLAIM, 1, DUE, now, lease, limit)]


def raw_record(client: Redis, mid: str) -> dict[str, str]:
    """The record's fields as strings ({} when it expired)."""
    return {k.decode(): v.decode() for k, v in client.hgetall(record_key(mid)).items()}


def update(client: Redis, mid: str, fields: dict[str, Any], due: float | None = None,
           now: float | None = None) -> bool:
    """Change a queued mailing: an outcome (`due` None: it leaves the queue) or a retry at `due`."""
    strs = {k: ("" if v is None else str(v)) for k, v in fields.items()}
    strs["updated_at"] = iso(now if now is not None else time.time())
    return bool(client.eval(_UPDATE, 2, record_key(mid), DUE, mid, json.dumps(strs), "" if due is None else due))


def reserve(client: Redis, mid: str, trigger: str | None, now: float, max_per_day: int,
            trigger_max: int) -> str:
    """Count this mailing against today's caps (once per mailing); 'ok' or the name of the full cap."""
    day = utc_day(now)
    result = client.eval(_RESERVE, 3, record_key(mid), cap_key(day), cap_key(day, trigger) if trigger else cap_key(day),
                         max_per_day, trigger_max, day, 2 * DAY, "1" if trigger else "0")
    return result.decode() if isinstance(result, bytes) else str(result)


def release(client: Redis, mid: str, trigger: str | None) -> bool:
    """Give a reservation back (the provider refused the piece: nothing is mailed)."""
    day = client.hget(record_key(mid), "cap_day")
    if not day:
        return False
    day = day.decode()
    return bool(client.eval(_RELEASE, 3, record_key(mid), cap_key(day), cap_key(day, trigger) if trigger else
                            cap_key(day), "1" if trigger else "0"))


def used_today(client: Redis, now: float, trigger: str | None = None) -> int:
    """Pieces counted against today's cap (in total, or for one trigger)."""
    return int(client.get(cap_key(utc_day(now), trigger)) or 0)
