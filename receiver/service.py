"""The receiver's request handlers and state: one config, the queue Redis, the mailpiece store, a clock; webhook
ingest, health, readiness and metrics (`receiver.app` puts them in the route table)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import redis.exceptions
from redis.asyncio import Redis
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive

from postrelay.core import keys
from postrelay.core.config import KNOWN_SOURCES, Config
from postrelay.core.redis_url import AsyncClient
from postrelay.core.stats import heartbeat_ages
from postrelay.core.stores.deliveries import OVERDUE_AFTER
from postrelay.receiver.auth import Principal, Role, bearer
from postrelay.receiver.body import Deadlines, receive_body
from postrelay.receiver.errors import HTTPError, unauthorized
from postrelay.receiver.ingest import IngestQueue
from postrelay.receiver.metrics import CONTENT_TYPE, ReceiverMetrics, read_redis_state, redis_down_families, redis_families
from postrelay.receiver.providers import generic, lob, postalytics, postgrid
from postrelay.receiver.providers.base import Normalized

log = logging.getLogger("postrelay.receiver")
REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, redis.exceptions.BusyLoadingError,
                redis.exceptions.ReadOnlyError, OSError)


# The mailpiece store may be a Redis Cluster, whose client raises RedisClusterException (not a RedisError)
# when no node answers.
PIECE_ERRORS = (*REDIS_ERRORS, redis.exceptions.RedisClusterException)


class Receiver:
    """Request handlers bound to one config, the queue Redis, the mailpiece store and a clock.

    `redis` is the queue Redis (ingest, readiness, metrics); `pieces` the mailpiece store (`[server] redis_url`,
    possibly a Redis Cluster; the same client unless `[server] queue_url` names another Redis).
    """

    def __init__(self, config: Config, redis: Redis, clock: Callable[[], float] = time.time,
                 pieces: AsyncClient | None = None) -> None:
        self.config = config
        self.redis = redis
        self.pieces = redis if pieces is None else pieces
        self.clock = clock
        self.queue = IngestQueue(redis, config.server.dedupe_window, config.links.allowed_hosts)
        self.body_deadlines = Deadlines(config.server.body_timeout)
        self.prom = ReceiverMetrics(config)

    def _source_settings(self, source: str) -> Any:
        if source not in KNOWN_SOURCES:
            # not echoed: a misconfigured URL may carry a token here (`/webhooks/<token>`)
            raise HTTPError(404, "unknown_source", f"unknown source; known: {', '.join(KNOWN_SOURCES)}")
        settings = getattr(self.config.sources, source)
        if settings is None:
            raise HTTPError(404, "source_not_configured", f"source {source!r} is not configured on this receiver")
        return settings

    def _unavailable(self, exc: Exception) -> HTTPError:
        log.warning("redis unavailable: %s", type(exc).__name__)
        retry_after = str(self.config.server.retry_after)
        return HTTPError(503, "redis_unavailable", "the event store is unreachable; nothing was accepted, retry later",
                         {"Retry-After": retry_after})

    async def ingest_request(self, source: str, token: str | None, headers: Headers, receive: Receive,
                             info: dict[str, Any]) -> tuple[int, int, int]:
        """Ingest one webhook request, counted and timed in-process; (accepted, duplicates, ignored).

        Raises HTTPError for an answer other than 200, ClientDisconnect when the client went away mid-body
        (not a rejection: `receiver.edge` counts it as a client abort); adds the request's log fields to `info`."""
        label = source if source in KNOWN_SOURCES else "unknown"
        info["source"] = label
        started = time.perf_counter()
        try:
            normalized, accepted, duplicates = await self._ingest(source, token, headers, receive)
        except HTTPError as exc:
            info["error"] = exc.code
            self.prom.rejected_request(label, exc.code, exc.status)
            raise
        except ClientDisconnect:
            raise
        except Exception:
            self.prom.rejected_request(label, "internal_error", 500)
            raise
        finally:
            self.prom.ingest.observe(time.perf_counter() - started)
        self.prom.accepted(label, accepted, duplicates, normalized.ignored)
        info.update(accepted=accepted, duplicates=duplicates, ignored=normalized.ignored)
        if normalized.events:
            info["event_ids"] = [e.id for e in normalized.events[:50]]
            info["mailpiece_ids"] = sorted({e.mailpiece.id for e in normalized.events[:50]})
        return accepted, duplicates, normalized.ignored

    async def _ingest(self, source: str, token: str | None, headers: Headers,
                      receive: Receive) -> tuple[Normalized, int, int]:
        settings = self._source_settings(source)
        server = self.config.server
        body = await receive_body(receive, headers.get("content-length"), server.max_body_bytes, self.body_deadlines)
        now = self.clock()
        received_at = datetime.fromtimestamp(now, UTC)
        normalized: Normalized
        if source == "postalytics":
            if not token:
                raise unauthorized("missing_token", "POST /webhooks/postalytics/{token}: the token is missing")
            normalized = postalytics.normalize(postalytics.verify(body, token, settings), received_at)
        else:
            provider = {"postgrid": postgrid, "lob": lob, "generic": generic}[source]
            payload = provider.verify(body, headers, settings, now)
            normalized = provider.normalize(payload, received_at)
        try:
            accepted, duplicates = await self.queue.enqueue(normalized.events)
        except REDIS_ERRORS as exc:
            raise self._unavailable(exc) from None
        except redis.exceptions.ResponseError as exc:
            # redis-py raises OutOfMemoryError for OOM (noeviction, full) with the "OOM" prefix stripped
            if isinstance(exc, redis.exceptions.OutOfMemoryError) or any(
                    code in str(exc) for code in ("OOM", "MISCONF", "NOSCRIPT")):
                raise self._unavailable(exc) from None
            raise
        return normalized, accepted, duplicates

    def _check_token(self, request: Request, role: Role = "read") -> Principal:
        return bearer(self.config.server, request.headers, role)

    async def healthz(self, request: Request) -> JSONResponse:
        """GET /healthz: the process is up."""
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> JSONResponse:
        """GET /readyz: Redis answers, and the newest worker heartbeat is fresh (`[server] worker_stale_after`).

        No worker ever registered: ready (the `worker` check is skipped) unless `[server] require_worker`.
        Deliveries due more than 30 s ago that no worker claimed (`deliveries`: delayed work running late)
        fail the check too.
        A 503 body names the failed check(s) in `failed`. `?check=redis` checks only what ingest needs (Redis):
        load balancers use it, so receivers keep accepting (and queueing) events while workers are down.
        A separate mailpiece store (a Redis Cluster `redis_url` beside `queue_url`) is pinged too (`pieces`),
        except with `?check=redis`: ingest does not need it.
        """
        server = self.config.server
        unavailable = {"Retry-After": str(server.retry_after)}
        check = request.query_params.get("check", "all")
        if check not in {"all", "redis"}:
            raise HTTPError(400, "invalid_check", "check must be 'all' (default) or 'redis'")
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.ping()
            pipe.hgetall(keys.WORKER_HEARTBEATS)
            pipe.zcount(keys.DELIVERIES_DUE, "-inf", self.clock() - OVERDUE_AFTER)
            _, beats, overdue = await pipe.execute()
        except (*REDIS_ERRORS, redis.exceptions.RedisError) as exc:
            return JSONResponse({"status": "unavailable", "redis": f"unreachable ({type(exc).__name__})",
                                 "failed": ["redis"]}, status_code=503, headers=unavailable)
        body: dict[str, Any] = {"status": "ready", "redis": "ok"}
        if check == "redis":
            return JSONResponse(body)
        if self.pieces is not self.redis:
            try:
                await self.pieces.ping()
            except (*PIECE_ERRORS, redis.exceptions.RedisError) as exc:
                body.update(status="unavailable", pieces=f"unreachable ({type(exc).__name__})", failed=["pieces"])
                return JSONResponse(body, status_code=503, headers=unavailable)
            body["pieces"] = "ok"
        ages = heartbeat_ages(beats, self.clock())
        if not ages:
            if server.require_worker:
                body.update(status="unavailable", worker="none registered", failed=["worker"])
                return JSONResponse(body, status_code=503, headers=unavailable)
            return JSONResponse(body)
        newest = min(ages.values())
        alive = sum(1 for a in ages.values() if a <= server.worker_stale_after)
        if newest > server.worker_stale_after:
            body.update(status="unavailable", worker=f"stale: newest heartbeat {newest:.0f} s ago "
                        f"(limit {server.worker_stale_after:g} s)", failed=["worker"])
            return JSONResponse(body, status_code=503, headers=unavailable)
        body["worker"] = f"ok: {alive} alive, newest heartbeat {newest:.0f} s ago"
        if overdue:
            body.update(status="unavailable", failed=["deliveries"],
                        deliveries=f"{overdue} overdue: due more than {OVERDUE_AFTER:g} s ago, not claimed by a worker")
            return JSONResponse(body, status_code=503, headers=unavailable)
        body["deliveries"] = "ok: none overdue"
        return JSONResponse(body)

    async def metrics(self, request: Request) -> Response:
        """GET /metrics: Prometheus text; Redis-derived series are read now, in one round trip."""
        try:
            families = redis_families(await read_redis_state(self.redis, self.config, self.clock()), self.config)
        except (*REDIS_ERRORS, redis.exceptions.RedisError) as exc:
            log.warning("metrics: redis unavailable: %s", type(exc).__name__)
            families = redis_down_families()
        return Response(self.prom.render(families), media_type=CONTENT_TYPE)
