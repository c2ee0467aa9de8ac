"""The receiver's bridge to the operator stores: dead letters, deliveries, destinations, follow-ups.

Replay, pause, resume and cancel are the stores' own functions (`postrelay.core.stores`), the very ones the CLI's
`dlq`, `destinations` and `followups` commands call: one implementation. They are synchronous (redis-py), so
they run in Starlette's thread pool on a sync client of the queue Redis made once per receiver. Lists page
with the same cursors as the mailpiece search (`postrelay.core.stores.catalog.page`).
"""

from __future__ import annotations

import json
from typing import Any

from starlette.concurrency import run_in_threadpool

from postrelay.core import keys
from postrelay.core.redis_url import sync_client
from postrelay.core.stores import deliveries, destinations, dlq, followups
from postrelay.core.stores.catalog import encode_cursor, page
from postrelay.receiver.errors import HTTPError

SCAN_LIMIT = 5000  # entries looked at per filtered page (a page may come back short, with a cursor)


def _sync(receiver: Any) -> Any:
    client = getattr(receiver, "_sync_queue", None)
    if client is None:
        server = receiver.config.server
        client = sync_client(server.queue_redis_url, server.redis_timeout)
        receiver._sync_queue = client
    return client


async def _run(receiver: Any, fn: Any, *args: Any) -> Any:
    return await run_in_threadpool(fn, _sync(receiver), *args)


def known_destination(receiver: Any, name: str) -> None:
    """404 `destination_not_found` unless `name` is configured."""
    if name not in receiver.config.destinations:
        raise HTTPError(404, "destination_not_found", f"no destination {name!r} is configured")


async def destination_report(receiver: Any) -> list[dict[str, Any]]:
    """Per destination: type, circuit, paused, backlog, parked, dead, last error (never its settings/secrets)."""
    return await _run(receiver, destinations.report, receiver.config, receiver.clock())


async def pause(receiver: Any, name: str) -> dict[str, Any]:
    """Pause a destination: its deliveries wait, parked, until resumed."""
    known_destination(receiver, name)
    await _run(receiver, destinations.pause, name)
    return {"destination": name, "paused": True}


async def resume(receiver: Any, name: str) -> dict[str, Any]:
    """Resume a destination: circuit reset, every parked delivery due now."""
    known_destination(receiver, name)
    requeued = await _run(receiver, destinations.resume, receiver.config, name, receiver.clock())
    return {"destination": name, "paused": False, "requeued": requeued}


async def _filtered(redis: Any, key: str, cursor: str | None, limit: int, load: Any, since: float | None = None,
                    ascending: bool = False) -> tuple[list[dict[str, Any]], str | None]:
    """Page through sorted set `key`, keeping what `load(members)` returns (None: left out).

    Stops at `limit` items (the cursor then points right after the last one kept) or after `SCAN_LIMIT`
    members looked at (a short page, with a cursor to go on).
    """
    out: list[dict[str, Any]] = []
    scanned = 0
    while scanned < SCAN_LIMIT:
        members, nxt = await page(redis, key, cursor, limit * 2, since, ascending=ascending)
        scanned += len(members)
        for (member, score), item in zip(members, await load([m for m, _ in members]), strict=True):
            if item is not None:
                out.append(item)
                if len(out) == limit:
                    more = nxt is not None or (member, score) != members[-1]
                    return out, encode_cursor(score, member) if more else None
        if nxt is None:
            return out, None
        cursor = nxt
    return out, cursor


async def dead_letters(receiver: Any, destination: str, error: str, since: float | None, cursor: str | None,
                       limit: int) -> tuple[list[dict[str, Any]], str | None]:
    """Dead letters, newest first, by destination, error text (a substring of the reason) and time."""

    async def load(members: list[str]) -> list[dict[str, Any] | None]:
        raws = await receiver.redis.hmget(keys.DLQ, members) if members else []
        out: list[dict[str, Any] | None] = []
        for raw in raws:
            entry = json.loads(raw) if raw is not None else None
            keep = entry is not None and (not destination or entry.get("destination") == destination) and (
                not error or error.lower() in str(entry.get("reason", "")).lower())
            out.append(entry if keep else None)
        return out

    return await _filtered(receiver.redis, keys.DLQ_INDEX, cursor, limit, load, since)


async def in_flight(receiver: Any, destination: str, status: str, cursor: str | None, limit: int
                    ) -> tuple[list[dict[str, Any]], str | None]:
    """Deliveries waiting for an attempt (`pending`: none failed yet; `retrying`: at least one failed)."""

    def read(r: Any, members: list[str]) -> list[dict[str, Any] | None]:
        out: list[dict[str, Any] | None] = []
        for m in members:
            item = deliveries.get(r, m) if not destination or deliveries.split_key(m)[0] == destination else None
            keep = item is not None and item["state"] in ("pending", "running") and (
                (status == "retrying") == bool(item["attempts"]))
            out.append(_public_delivery(item) if keep and item is not None else None)
        return out

    async def load(members: list[str]) -> list[dict[str, Any] | None]:
        return await _run(receiver, read, members)

    return await _filtered(receiver.redis, keys.DELIVERIES_DUE, cursor, limit, load)


def _public_delivery(item: dict[str, Any]) -> dict[str, Any]:
    """A delivery without its event body (which the piece's page shows): key, state, attempts, outcome."""
    event = item.get("event") or {}
    attempts = item.get("attempts") or []
    last = attempts[-1] if attempts else {}
    outcome = ("delivered" + (f" ({item['done'].get('remote_id')})" if item["done"].get("remote_id") else "")
               if item.get("done") else last.get("outcome"))
    return {"key": item["key"], "destination": item["destination"], "event_id": item["event_id"],
            "tag": item.get("tag"), "state": item["state"], "attempts": attempts, "due": item.get("due"),
            "outcome": outcome, "event_type": event.get("type"),
            "mailpiece": {"source": event.get("source"), "id": (event.get("mailpiece") or {}).get("id")}}


async def replay(receiver: Any, ids: list[str] | None = None, destination: str | None = None) -> dict[str, Any]:
    """Replay dead letters by id, or all of one destination; counts and the ids that were not dead letters."""
    now = receiver.clock()
    if ids is None:
        if destination:
            known_destination(receiver, destination)
        counts = await _run(receiver, dlq.replay, now, destination)
        return {**counts, "not_found": []}
    tally: dict[str, Any] = {"replayed": 0, "skipped_done": 0, "not_found": []}
    for key in ids:
        outcome = await _run(receiver, dlq.replay_one, key, now)
        if outcome == "not_found":
            tally["not_found"].append(key)
        else:
            tally[outcome] += 1
    return tally


async def pending_followups(receiver: Any, rule: str, cursor: str | None, limit: int
                            ) -> tuple[list[dict[str, Any]], str | None]:
    """Pending follow-ups, soonest due first, optionally of one rule."""

    async def load(members: list[str]) -> list[dict[str, Any] | None]:
        pipe = receiver.redis.pipeline(transaction=False)
        for fid in members:
            pipe.hget(keys.followup(fid), "data")
        out: list[dict[str, Any] | None] = []
        for fid, raw in zip(members, await pipe.execute() if members else [], strict=True):
            if raw is None or (rule and fid.split("|", 1)[0] != rule):
                out.append(None)
                continue
            data = json.loads(raw)
            event = data["event"]
            out.append({"id": fid, "rule": data["rule"], "do": data["do"], "due": data["scheduled_for"],
                        "estimated": bool(data["estimated"]), "trigger": event["type"],
                        "mailpiece": {"source": event["source"], "id": event["mailpiece"]["id"]}})
        return out

    return await _filtered(receiver.redis, keys.FOLLOWUPS_DUE, cursor, limit, load, ascending=True)


async def cancel_followup(receiver: Any, fid: str, by: str = "") -> bool:
    """Cancel one pending follow-up (False: none pending with that id); `by` names the token that did it."""
    return bool(await _run(receiver, followups.cancel, fid, receiver.clock(), by))


async def piece_activity(receiver: Any, piece: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A piece's deliveries (every destination, relay and follow-up) and its follow-ups (pending, fired, cancelled)."""
    config = receiver.config
    source, piece_id = piece["source"], piece["id"]
    types = {e["type"]: e["id"] for e in piece["events"]}
    rules = [(r.name, r.do) for r in config.followups]
    candidates = [(deliveries.delivery_key(dest, e["id"]), e["type"]) for e in piece["events"]
                  for dest in config.destinations]
    candidates += [(deliveries.delivery_key(do, e["id"], name), e["type"]) for name, do in rules
                   for e in piece["events"]]

    def read(r: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        found = []
        for key, etype in candidates:
            item = deliveries.get(r, key)
            if item is not None:
                found.append({**_public_delivery(item), "event_type": etype})
        fus = []
        for rule in config.followups:
            fid = followups.followup_id(rule.name, source, piece_id)
            raw, fired = r.hget(keys.followup(fid), "data"), r.get(keys.followup_fired(fid))
            cancelled = r.get(keys.followup_cancelled(fid)) if raw is None and fired is None else None
            row = {"id": fid, "rule": rule.name, "do": rule.do, "estimated": False}
            if raw is not None:
                data = json.loads(raw)
                fus.append({**row, "state": "pending", "at": data["scheduled_for"], "estimated": data["estimated"]})
            elif fired is not None:
                extra = json.loads(fired)
                fus.append({**row, "state": "fired", "at": extra.get("fired_at"), "estimated": extra.get("estimated")})
            elif cancelled is not None:
                fus.append({**row, "state": "cancelled", "at": json.loads(cancelled).get("at")})
            elif rule.after in types and set(rule.unless) & set(types):
                fus.append({**row, "state": "cancelled", "at": None})  # by an `unless` event
        return found, fus

    return await run_in_threadpool(read, _sync(receiver))
