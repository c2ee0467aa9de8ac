"""The worker process's shared objects: config, Redis, adapters, breaker, limiter, clock.

Two Redis clients: `redis` is the queue Redis (`[server] queue_url`, else `redis_url`: the ingest stream,
deliveries, follow-ups, DLQ, stats, heartbeats) and `pieces` the mailpiece store (`[server] redis_url`, which
may be a Redis Cluster). Without a separate `queue_url` they are the same object.

Tests build a Runtime directly with a controllable clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from redis import Redis
from redis.cluster import RedisCluster

from postrelay.adapters import ADAPTERS, adapter_class, check_destination
from postrelay.adapters.base import Adapter
from postrelay.adapters.client import relay_client
from postrelay.core.config import Config, ConfigError
from postrelay.core.config_errors import located
from postrelay.core.redaction import secret_values
from postrelay.core.stores.circuit import CircuitBreaker
from postrelay.workers.ratelimit import RateLimiter, parse_rate


def connect_redis(url: str, timeout: float | None = None) -> Redis:
    """A sync client of the queue Redis; no read timeout by default (the dispatcher blocks on XREADGROUP)."""
    from postrelay.core.redis_url import sync_queue_client

    return sync_queue_client(url, timeout)


def build_adapters(config: Config, client: httpx.Client) -> dict[str, Adapter]:
    """Instantiate every configured destination; ConfigError names each bad destination key, one line each,
    never a secret value."""
    problems: list[str] = []
    for name, dest in config.destinations.items():
        problems += check_destination(name, {"type": dest.type, **dest.settings})
        if dest.rate_limit:
            try:
                parse_rate(dest.rate_limit)
            except ValueError as exc:
                problems.append(f"destinations.{name}.rate_limit: {exc}")
        if dest.batch_size > 1 and dest.type in ADAPTERS and not adapter_class(dest.type).batch_limit:
            problems.append(f"destinations.{name}.batch_size: {dest.type} has no batch API (it delivers one"
                            " event per call): remove batch_size")
    if problems:
        raise ConfigError(located(problems, None, secret_values(config.model_dump())))
    return {name: adapter_class(dest.type)(name, adapter_class(dest.type).Settings.model_validate(dest.settings),
                                           client)
            for name, dest in config.destinations.items()}


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
    pieces: Redis | RedisCluster | None = None  # the mailpiece store; None: the same as `redis` (see piece_store)

    def __post_init__(self) -> None:
        if self.pieces is None:
            self.pieces = self.redis
        if self.client is None:
            self.client = relay_client(self.config.delivery.timeout)
        if not self.adapters:
            self.adapters = build_adapters(self.config, self.client)
        self.rates = {n: parse_rate(d.rate_limit) for n, d in self.config.destinations.items() if d.rate_limit}
        self.breaker = CircuitBreaker(self.redis, self.config.delivery)
        self.limiter = RateLimiter(self.redis)
        for name, adapter in self.adapters.items():
            self._wire_rate_limit(name, adapter)

    def _wire_rate_limit(self, name: str, adapter: Adapter) -> None:
        """Every call of a rate-limited destination takes a slot; header-reading adapters teach the limiter."""
        if adapter.pace is not None or not (name in self.rates or adapter.reads_rate_headers):
            return
        rate = self.rates.get(name)
        adapter.pace = lambda: self.limiter.pace(name, rate, self.clock, self.sleep)
        if adapter.reads_rate_headers:
            adapter.observe = lambda info: self.limiter.observe(name, info, self.clock())

    def batching(self, dest: str) -> int:
        """Deliveries per batch call for `dest` (1: it delivers one event per call)."""
        config, adapter = self.config.destinations.get(dest), self.adapters.get(dest)
        if config is None or adapter is None or not adapter.batch_limit:
            return 1
        return config.batch_size

    @property
    def piece_store(self) -> Redis | RedisCluster:
        """The mailpiece store's client, typed as never None (`redis` unless `[server] redis_url` names another)."""
        return self.redis if self.pieces is None else self.pieces

    def close(self) -> None:
        """Close the HTTP client, and the mailpiece store's client when it is a separate one."""
        if self.client is not None:
            self.client.close()
        if self.pieces is not None and self.pieces is not self.redis:
            self.pieces.close()


def connect_pieces(config: Config, queue: Redis) -> Redis | RedisCluster:
    """The mailpiece store's client: `queue` itself unless `[server] queue_url` names another Redis.

    It never blocks on a command, so it has a read timeout (`[server] redis_timeout`, at least 5 s).
    """
    from postrelay.core.redis_url import sync_client

    server = config.server
    if not server.split_stores or not server.redis_url:
        return queue
    return sync_client(server.redis_url, max(5.0, server.redis_timeout))


def from_config(config: Config, timeout: float | None = None, **kwargs: Any) -> Runtime:
    """Build a runtime for `config`: the queue Redis (`queue_url`, else `redis_url`; read `timeout`, none by
    default: the dispatcher blocks on XREADGROUP) and the mailpiece store."""
    url = config.server.queue_redis_url
    if not url or not config.server.redis_url:
        raise ValueError("server.redis_url is required")
    queue = connect_redis(url, timeout)
    return Runtime(config=config, redis=queue, pieces=connect_pieces(config, queue), **kwargs)
