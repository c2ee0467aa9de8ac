"""The worker process's shared objects: config, Redis, RQ queue, adapters, breaker, limiter, clock.

Two Redis clients: `redis` is the queue Redis (`[server] queue_url`, else `redis_url`: the ingest stream, RQ,
deliveries, follow-ups, DLQ, stats, heartbeats) and `pieces` the mailpiece store (`[server] redis_url`, which
may be a Redis Cluster). Without a separate `queue_url` they are the same object.

RQ job functions take only plain ids; they find everything else here. Tests build a Runtime directly
with a controllable clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from redis import Redis
from redis.cluster import RedisCluster
from rq import Queue

from adapters import adapter_class
from adapters.base import Adapter
from adapters.client import relay_client
from postrelay import keys
from postrelay.config import Config
from postrelay.stores.circuit import CircuitBreaker
from workers.executor import DeliveryExecutor
from workers.ratelimit import RateLimiter, parse_rate

QUEUE_NAME = keys.RQ_QUEUE_NAME


def connect_redis(url: str, timeout: float | None = None) -> Redis:
    """A sync Redis client; no read timeout by default because RQ blocks on BLPOP for minutes."""
    from postrelay.redis_url import sync_client

    return sync_client(url, timeout)


def build_adapters(config: Config, client: httpx.Client) -> dict[str, Adapter]:
    """Instantiate every configured destination; ValueError names a bad destination key."""
    out: dict[str, Adapter] = {}
    for name, dest in config.destinations.items():
        try:
            cls = adapter_class(dest.type)
            settings = cls.Settings.model_validate(dest.settings)
            if dest.rate_limit:
                parse_rate(dest.rate_limit)
        except Exception as exc:  # pydantic ValidationError, KeyError, ValueError
            raise ValueError(f"destinations.{name}: {exc}") from None
        out[name] = cls(name, settings, client)
    return out


@dataclass
class Runtime:
    """Everything a delivery or dispatch needs."""

    config: Config
    redis: Redis
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    client: httpx.Client | None = None
    adapters: dict[str, Adapter] = field(default_factory=dict)
    rates: dict[str, float] = field(default_factory=dict)
    executor: DeliveryExecutor | None = None  # set by the worker process; None runs attempts inline
    pieces: Redis | RedisCluster | None = None  # the mailpiece store; None: the same as `redis`

    def __post_init__(self) -> None:
        if self.pieces is None:
            self.pieces = self.redis
        if self.client is None:
            self.client = relay_client(self.config.delivery.timeout)
        if not self.adapters:
            self.adapters = build_adapters(self.config, self.client)
        self.rates = {n: parse_rate(d.rate_limit) for n, d in self.config.destinations.items() if d.rate_limit}
        self.queue = Queue(QUEUE_NAME, connection=self.redis)
        self.breaker = CircuitBreaker(self.redis, self.config.delivery)
        self.limiter = RateLimiter(self.redis)

    def close(self) -> None:
        """Close the HTTP client, and the mailpiece store's client when it is a separate one."""
        if self.client is not None:
            self.client.close()
        if self.pieces is not None and self.pieces is not self.redis:
            self.pieces.close()


_current: Runtime | None = None


def install(runtime: Runtime) -> Runtime:
    """Make `runtime` the one RQ jobs in this process use."""
    global _current
    _current = runtime
    return runtime


def current() -> Runtime:
    """The installed runtime (RuntimeError if the worker did not install one)."""
    if _current is None:
        raise RuntimeError("no postrelay runtime installed in this process")
    return _current


def connect_pieces(config: Config, queue: Redis) -> Redis | RedisCluster:
    """The mailpiece store's client: `queue` itself unless `[server] queue_url` names another Redis.

    It never blocks on a command, so it has a read timeout (`[server] redis_timeout`, at least 5 s).
    """
    from postrelay.redis_url import sync_client

    server = config.server
    if not server.split_stores or not server.redis_url:
        return queue
    return sync_client(server.redis_url, max(5.0, server.redis_timeout))


def from_config(config: Config, **kwargs: Any) -> Runtime:
    """Build a runtime for `config`: the queue Redis (`queue_url`, else `redis_url`) and the mailpiece store."""
    url = config.server.queue_redis_url
    if not url or not config.server.redis_url:
        raise ValueError("server.redis_url is required")
    queue = connect_redis(url)
    return Runtime(config=config, redis=queue, pieces=connect_pieces(config, queue), **kwargs)
