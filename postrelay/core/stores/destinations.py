"""Destinations at run time: pause / resume, and the per-destination report (`postrelay destinations`,
`postrelay status`, the console).

A paused destination keeps its deliveries: those that come due meanwhile are parked in
`pr:dest:{dest}:parked` (out of the due-time set), and resuming makes every parked one due again.
"""

from __future__ import annotations

import json
from typing import Any

from redis import Redis

from postrelay.core import keys
from postrelay.core.config import Config
from postrelay.core.replies import members, value
from postrelay.core.stores import deliveries
from postrelay.core.stores.circuit import CircuitBreaker


def is_paused(r: Redis, dest: str) -> bool:
    """True while `dest` is paused."""
    return bool(r.exists(keys.destination_paused(dest)))


def pause(r: Redis, dest: str) -> None:
    """Pause `dest`: its deliveries wait (parked) until `resume`."""
    r.set(keys.destination_paused(dest), "1")


def park(client: Any, key: str, seq: str) -> None:
    """Add the commands parking a delivery of a paused destination to `client` (a pipeline)."""
    client.rpush(keys.destination_parked(deliveries.split_key(key)[0]), json.dumps([key, seq]))
    deliveries.forget(client, key)  # the parked list holds it until `resume`


def resume(r: Redis, config: Config, dest: str, now: float) -> int:
    """Resume `dest`: forget its circuit state and make every parked delivery due now; returns how many."""
    r.delete(keys.destination_paused(dest))
    CircuitBreaker(r, config.delivery).reset(dest)
    count = 0
    while True:
        raw = value(r.lpop(keys.destination_parked(dest)))
        if raw is None:
            return count
        key, _seq = json.loads(raw)
        deliveries.schedule(r, key, now)
        count += 1


def report(r: Redis, config: Config, now: float) -> list[dict[str, Any]]:
    """Per destination: type, circuit state, paused flag, backlog (pending deliveries), parked, dead, last error."""
    dead_by_dest: dict[str, int] = {}
    for key in members(r.zrange(keys.DLQ_INDEX, 0, -1)):  # the keys name the destination: no entry is read
        name = deliveries.split_key(key)[0]
        dead_by_dest[name] = dead_by_dest.get(name, 0) + 1
    backlog = deliveries.backlog(r, config.destinations)
    breaker = CircuitBreaker(r, config.delivery)
    rows = []
    for name, dest in config.destinations.items():
        state = breaker.state(name, now)
        rows.append({"name": name, "type": dest.type, "state": state["state"], "failures": state["failures"],
                     "paused": is_paused(r, name), "backlog": backlog.get(name, 0),
                     "parked": int(r.llen(keys.destination_parked(name))), "dead": dead_by_dest.get(name, 0),
                     "last_error": state["last_error"], "open_until": state["open_until"]})
    return rows
