"""Redis clients from a URL: `redis://`, `rediss://`, `unix://` and `redis+sentinel://h1:26379,h2:26379/master/db`."""

from __future__ import annotations

from urllib.parse import urlsplit

import redis
from redis.sentinel import Sentinel


def _sentinel_parts(url: str) -> tuple[list[tuple[str, int]], str, int, str | None]:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    password = None
    if len(netloc) == 2:
        password = netloc[0].partition(":")[2] or None
    hosts = []
    for item in netloc[-1].split(","):
        host, _, port = item.partition(":")
        hosts.append((host, int(port or 26379)))
    path = [p for p in parts.path.split("/") if p]
    if not path:
        raise ValueError("redis+sentinel:// URL needs a master name: redis+sentinel://host:26379/mymaster/0")
    db = int(path[1]) if len(path) > 1 else 0
    return hosts, path[0], db, password


def sync_client(url: str, timeout: float | None = 5.0) -> redis.Redis:
    """A redis-py client for `url`, following the Sentinel master when the scheme is redis+sentinel."""
    if url.startswith("redis+sentinel://"):
        hosts, master, db, password = _sentinel_parts(url)
        sentinel = Sentinel(hosts, socket_timeout=timeout)
        return sentinel.master_for(master, db=db, password=password, socket_timeout=timeout)
    return redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=5.0,
                                socket_keepalive=True, health_check_interval=30)


def async_client(url: str, timeout: float) -> redis.asyncio.Redis:
    """An asyncio client that fails fast (one attempt) so outages answer 503 quickly."""
    from redis.asyncio.retry import Retry
    from redis.asyncio.sentinel import Sentinel as AsyncSentinel
    from redis.backoff import NoBackoff

    if url.startswith("redis+sentinel://"):
        hosts, master, db, password = _sentinel_parts(url)
        sentinel = AsyncSentinel(hosts, socket_timeout=timeout)
        return sentinel.master_for(master, db=db, password=password, socket_timeout=timeout)
    return redis.asyncio.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                        retry=Retry(NoBackoff(), 1), health_check_interval=30)
