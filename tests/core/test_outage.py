"""What counts as a Redis outage for the worker's writes, against a real full Redis (`noeviction`)."""

from __future__ import annotations

import redis

from postrelay.core import keys
from postrelay.core.outage import is_outage, write_through
from postrelay.core.scripts import lua
from tests.support.redis_server import RedisServer


def test_full_redis_errors_are_outages_and_a_lock_can_still_be_renewed():
    server = RedisServer().start()
    try:
        r = redis.Redis(port=server.port)
        lock = keys.delivery_lock("hook|mev_1")
        r.set(lock, "tok", px=2000)
        r.zadd(keys.DELIVERIES_DUE, {"hook|mev_2": 0})
        r.config_set("maxmemory", 1)
        errors = []
        for call in (lambda: r.set("k", "v"), lambda: r.pipeline(transaction=True).set("k", "v").incr("n").execute(),
                     lambda: r.rpush("l", "x"),
                     lambda: lua("due_claim")(r, keys=[keys.DELIVERIES_DUE], args=[10, 1, 1])):
            try:
                call()
            except redis.RedisError as exc:
                errors.append(exc)
        assert len(errors) == 4 and all(is_outage(e) for e in errors), errors
        # the execution lock stays ours while Redis is full: renewing is a PEXPIRE, which Redis still allows
        assert lua("delivery_renew")(r, keys=[lock], args=["tok", 60000]) == 1 and r.pttl(lock) > 50000
        r.config_set("maxmemory", 0)
    finally:
        server.cleanup()


def test_other_errors_are_not_outages():
    assert not is_outage(redis.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"))
    assert not is_outage(redis.exceptions.NoScriptError("No matching script"))
    for text in ("LOADING Redis is loading the dataset in memory", "BUSY Redis is busy running a script",
                 "MISCONF Redis is configured to save RDB snapshots", "READONLY You can't write against a replica"):
        assert is_outage(redis.ResponseError(text)), text
    assert is_outage(redis.ConnectionError("refused")) and is_outage(redis.TimeoutError())


def test_write_through_retries_outages_until_the_write_lands():
    calls = []

    def write() -> str:
        calls.append(1)
        if len(calls) < 4:
            raise redis.exceptions.OutOfMemoryError("command not allowed when used memory > 'maxmemory'")
        return "stored"

    slept: list[float] = []
    assert write_through(write, "a done marker", deadline=float("inf"), sleep=slept.append) == "stored"
    assert len(calls) == 4 and slept == [0.05, 0.1, 0.2]
