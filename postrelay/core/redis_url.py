"""Redis clients from a URL.

Schemes: `redis://`, `rediss://`, `unix://`, `redis+sentinel://h1:26379,h2:26379/master/db` and Redis Cluster
`redis+cluster://[user:password@]h1:7000,h2:7001/` (`rediss+cluster://` for TLS): the hosts are startup nodes,
the client discovers the others. Cluster clients are `redis.cluster.RedisCluster` (sync) and
`redis.asyncio.cluster.RedisCluster` (asyncio); only the mailpiece store may be a cluster (`postrelay.core.config`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster
from redis.sentinel import Sentinel

CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
# TLS settings a cluster URL may carry as query parameters (as redis-py's from_url takes them for rediss://)
_CLUSTER_TLS_PARAMS = ("ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_check_hostname")

SyncClient = redis.Redis | redis.cluster.RedisCluster
AsyncClient = redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster
def is_cluster_url(url: str | None) -> bool:
    """True for a `redis+cluster://` or `rediss+cluster://` URL."""
    return url is not None and url.split("://", 1)[0].lower() in CLUSTER_SCHEMES


def is_cluster(client: object) -> bool:
    """True when `client` is a Redis Cluster client (sync or asyncio)."""
    return isinstance(client, redis.cluster.RedisCluster | redis.asyncio.cluster.RedisCluster)


@dataclass(frozen=True)
class ClusterURL:
    """A parsed cluster URL: startup nodes, credentials and TLS settings."""

    nodes: list[tuple[str, int]]
    username: str | None = None
    password: str | None = None
    ssl: bool = False
    tls: dict[str, Any] = field(default_factory=dict)


def _host_port(item: str, url: str) -> tuple[str, int]:
    if item.startswith("["):  # [::1]:7000
        host, _, rest = item[1:].partition("]")
        port_text = rest.removeprefix(":")
    else:
        host, _, port_text = item.rpartition(":") if ":" in item else (item, "", "")
    if not host:
        raise ValueError(f"Redis Cluster URL {url!r}: empty host in {item!r}")
    try:
        port = int(port_text) if port_text else 6379
    except ValueError:
        raise ValueError(f"Redis Cluster URL {url!r}: port {port_text!r} of {host!r} is not a number") from None
    if not 0 < port < 65536:
        raise ValueError(f"Redis Cluster URL {url!r}: port {port} of {host!r} is out of range")
    return host, port


def parse_cluster_url(url: str) -> ClusterURL:
    """Parse `redis+cluster://[user:password@]h1:7000,h2:7001[/0][?ssl_cert_reqs=…]`; ValueError names the flaw.

    The password is shown nowhere in the error messages.
    """
    scheme, sep, _ = url.partition("://")
    if not sep or scheme.lower() not in CLUSTER_SCHEMES:
        raise ValueError("a Redis Cluster URL starts with redis+cluster:// or rediss+cluster://")
    parts = urlsplit(url)
    creds, at, hosts = parts.netloc.rpartition("@")
    shown = f"{scheme}://{hosts}{parts.path}"  # for messages: no credentials
    username = password = None
    if at:
        user, _, pw = creds.partition(":")  # as redis-py's from_url: user:password@, :password@
        username, password = unquote(user) or None, unquote(pw) or None
    if not hosts or all(not h.strip() for h in hosts.split(",")):
        raise ValueError(f"Redis Cluster URL {shown!r}: no startup node (redis+cluster://host1:7000,host2:7001/)")
    nodes = [_host_port(h.strip(), shown) for h in hosts.split(",") if h.strip()]
    if parts.path.strip("/") not in ("", "0"):
        raise ValueError(f"Redis Cluster URL {shown!r}: a cluster has only database 0 (path {parts.path!r})")
    tls: dict[str, Any] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key not in _CLUSTER_TLS_PARAMS:
            raise ValueError(f"Redis Cluster URL {shown!r}: unknown query parameter {key!r} "
                             f"(allowed: {', '.join(_CLUSTER_TLS_PARAMS)})")
        tls[key] = value.lower() in ("1", "true", "yes") if key == "ssl_check_hostname" else value
    ssl = scheme.lower() == "rediss+cluster"
    if tls and not ssl:
        raise ValueError(f"Redis Cluster URL {shown!r}: TLS parameters need rediss+cluster://")
    return ClusterURL(nodes=nodes, username=username, password=password, ssl=ssl, tls=tls)


SCHEMES = ("redis", "rediss", "unix", "redis+sentinel", *CLUSTER_SCHEMES)


def check_url(url: str) -> None:
    """ValueError naming what is wrong with a Redis URL (never its credentials): the scheme, a port that is not
    a number, a database that is not a number (redis-py would silently use database 0)."""
    scheme, sep, _ = url.partition("://")
    if not sep or scheme.lower() not in SCHEMES:
        got = f"scheme {scheme.lower()!r}" if sep else "no scheme"
        raise ValueError(f"not a Redis URL ({got}); it starts with redis://, rediss://, unix://, "
                         "redis+sentinel:// or redis+cluster://")
    scheme = scheme.lower()
    if scheme in CLUSTER_SCHEMES:
        parse_cluster_url(url)
        return
    if scheme == "redis+sentinel":
        try:
            _sentinel_parts(url)
        except ValueError as exc:
            if "master name" in str(exc):
                raise
            raise ValueError("redis+sentinel:// URL: each host's port and the database must be numbers "
                             "(redis+sentinel://host:26379/mymaster/0)") from None
        return
    parts = urlsplit(url)
    if scheme == "unix":
        if not parts.path:
            raise ValueError("unix:// URL needs the socket's path: unix:///run/redis/redis.sock")
        db = dict(parse_qsl(parts.query)).get("db", "0")
    else:
        try:
            parts.port  # noqa: B018 (urllib checks it when read)
        except ValueError:
            raise ValueError(f"{scheme}:// URL: the port must be a number from 1 to 65535") from None
        db = parts.path.strip("/") or "0"
    if not db.isdigit():
        example = "unix:///run/redis/redis.sock?db=0" if scheme == "unix" else f"{scheme}://host:6379/0"
        raise ValueError(f"{scheme}:// URL: the database must be a number ({example})")


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


def sync_client(url: str, timeout: float | None = 5.0) -> SyncClient:
    """A redis-py client for `url`, following the Sentinel master or the cluster's slot map.

    A cluster client connects to a startup node at once (to read the slot map): an unreachable cluster raises
    `redis.exceptions.RedisClusterException` here.
    """
    if is_cluster_url(url):
        c = parse_cluster_url(url)
        return redis.cluster.RedisCluster(
            startup_nodes=[redis.cluster.ClusterNode(h, p) for h, p in c.nodes], username=c.username,
            password=c.password, ssl=c.ssl, **c.tls, socket_timeout=timeout, socket_connect_timeout=5.0,
            socket_keepalive=True, health_check_interval=30)
    if url.startswith("redis+sentinel://"):
        hosts, master, db, password = _sentinel_parts(url)
        sentinel = Sentinel(hosts, socket_timeout=timeout)
        return sentinel.master_for(master, db=db, password=password, socket_timeout=timeout)
    tcp = {} if url.lower().startswith("unix://") else {"socket_keepalive": True}  # not an option of unix sockets
    return redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=5.0, health_check_interval=30,
                                **tcp)


def async_client(url: str, timeout: float) -> AsyncClient:
    """An asyncio client that fails fast (one attempt) so outages answer 503 quickly.

    A cluster client connects lazily, on its first command; it retries once, without backoff, after a
    connection error (re-reading the slot map, e.g. after a failover).
    """
    from redis.asyncio.retry import Retry
    from redis.asyncio.sentinel import Sentinel as AsyncSentinel
    from redis.backoff import NoBackoff

    if is_cluster_url(url):
        c = parse_cluster_url(url)
        return redis.asyncio.cluster.RedisCluster(
            startup_nodes=[redis.asyncio.cluster.ClusterNode(h, p) for h, p in c.nodes], username=c.username,
            password=c.password, ssl=c.ssl, **c.tls, socket_timeout=timeout, socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 1), health_check_interval=30)
    if url.startswith("redis+sentinel://"):
        hosts, master, db, password = _sentinel_parts(url)
        sentinel = AsyncSentinel(hosts, socket_timeout=timeout)
        return sentinel.master_for(master, db=db, password=password, socket_timeout=timeout,
                                   **_python_parser(url))
    return redis.asyncio.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                        retry=Retry(NoBackoff(), 1), health_check_interval=30,
                                        **_python_parser(url))


def _python_parser(url: str) -> dict[str, Any]:
    """Connection options that keep redis-py's pure-Python reply parser on the asyncio path.

    hiredis (a dependency, for the worker: its C command packer and parser took the sync client's share of a
    delivery's CPU from ~25% down, +25% deliveries/s) makes the receiver's asyncio client slower: measured
    161 vs 131 µs of CPU per webhook request with the hiredis asyncio parser.
    """
    try:
        from redis._parsers import _AsyncRESP2Parser, _AsyncRESP3Parser
    except ImportError:  # a redis-py that moved them: keep its default
        return {}
    protocol = dict(parse_qsl(urlsplit(url).query)).get("protocol", "")
    return {"parser_class": _AsyncRESP2Parser if protocol == "2" else _AsyncRESP3Parser}


_NOT_A_CLUSTER = "the queue Redis ([server] queue_url, else redis_url) cannot be a Redis Cluster"


def sync_queue_client(url: str, timeout: float | None = 5.0) -> redis.Redis:
    """`sync_client` for the queue Redis, which holds multi-key scripts and RQ: one Redis, never a cluster."""
    client = sync_client(url, timeout)
    if not isinstance(client, redis.Redis):
        raise ValueError(_NOT_A_CLUSTER)
    return client


def async_queue_client(url: str, timeout: float) -> redis.asyncio.Redis:
    """`async_client` for the queue Redis (see `sync_queue_client`)."""
    client = async_client(url, timeout)
    if not isinstance(client, redis.asyncio.Redis):
        raise ValueError(_NOT_A_CLUSTER)
    return client
