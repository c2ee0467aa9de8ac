"""The ASGI application: the route table over the receiver's handlers (`receiver.service`), the JSON API, tracking
links, the console, health, readiness and metrics."""

from __future__ import annotations

import gc
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Route

from postrelay.core.config import Config
from postrelay.core.redis_url import AsyncClient, async_client, async_queue_client
from postrelay.receiver.api.mailings import Mailings
from postrelay.receiver.api.routes import api_routes
from postrelay.receiver.api.triggers import Triggers
from postrelay.receiver.edge import Edge, ReceiverApp
from postrelay.receiver.links import LinkVisits
from postrelay.receiver.links_api import LinksAPI
from postrelay.receiver.openapi import openapi_json
from postrelay.receiver.service import Receiver
from postrelay.receiver.ui.routes import console_routes
from postrelay.receiver.visitroutes import VisitRoutes
from postrelay.receiver.webhook import WebhookEndpoint

_frozen = False


def freeze_startup() -> None:
    """Once per process, at the first app's startup: what startup made (modules, config, routes: ~300,000
    objects) lives as long as the process; frozen out of the collector's sight, a full collection walks only
    what came after (tens of ms less per pause, which every request arriving meanwhile waited for). Only
    once: frozen objects are never collected as cycles, so a process making many apps (the tests) would
    otherwise keep each one."""
    global _frozen
    if not _frozen:
        _frozen = True
        gc.collect()
        gc.freeze()


def create_app(config: Config, redis_client: Redis | None = None, clock: Callable[[], float] = time.time,
               pieces_client: AsyncClient | None = None) -> Starlette:
    """Build the ASGI app; without `redis_client` one is made from `[server] queue_url` (else `redis_url`), and
    without `pieces_client` the mailpiece store's from `redis_url` when `queue_url` names another Redis."""
    server = config.server
    if redis_client is None:
        if not server.queue_redis_url or not server.redis_url:
            raise ValueError("server.redis_url is required (postrelay run starts an embedded Redis)")
        redis_client = async_queue_client(server.queue_redis_url, server.redis_timeout)
    if pieces_client is None and server.split_stores and server.redis_url:
        pieces_client = async_client(server.redis_url, server.redis_timeout)
    receiver = Receiver(config, redis_client, clock, pieces_client)
    links = LinksAPI(receiver)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        freeze_startup()
        yield
        receiver.queue.close()
        await receiver.redis.aclose()
        if receiver.pieces is not receiver.redis:
            await receiver.pieces.aclose()
        sync_queue = getattr(receiver, "_sync_queue", None)  # the operator stores' client (receiver.api.operations)
        if sync_queue is not None:
            sync_queue.close()

    webhook = WebhookEndpoint(receiver)
    visits = LinkVisits(receiver)
    # The route table. The webhook routes come first: they carry the load, and the router tries routes in order
    # (`{source}` never matches `postalytics/<token>`: a path parameter matches no slash).
    routes: list[BaseRoute] = [
        Route("/webhooks/{source}", webhook, methods=["POST"]),
        Route("/webhooks/postalytics/{token}", webhook, methods=["POST"]),
        visit_route := Route("/t/{token}", visits, methods=["GET", "HEAD"]),  # visits carry load too
        goal_route := Route("/t/{token}/goal", visits, methods=["GET", "HEAD"]),
        Route("/v1/links", links.mint, methods=["POST"]),
        Route("/v1/links/batch", links.mint_batch, methods=["POST"]),
        Route("/v1/links/{token}", links.show, methods=["GET"]),
        Route("/v1/links/{token}", links.revoke, methods=["DELETE"]),
        Route("/v1/links/{token}/goal", links.goal, methods=["POST"]),
        Route("/v1/links/{token}/qr.{kind}", links.qr, methods=["GET"]),
        *api_routes(),
        Route("/healthz", receiver.healthz, methods=["GET"]),
        Route("/readyz", receiver.readyz, methods=["GET"]),
        Route("/metrics", receiver.metrics, methods=["GET"]),
        Route("/openapi.json", openapi_json, methods=["GET"]),
    ]
    mailings = Mailings(receiver)
    routes += [*mailings.routes(), *Triggers(receiver, mailings).routes()]
    if config.ui.enabled:
        routes.extend(console_routes(receiver))
    app = ReceiverApp(routes=routes, lifespan=lifespan,
                      middleware=[Middleware(Edge, metrics=receiver.prom, server=server)])
    app.router.redirect_slashes = False  # receiver.errors.routing_error answers those with JSON
    app.front = lambda router: VisitRoutes(router, visit_route, goal_route)  # /t/ without the route search
    app.state.receiver = receiver
    app.state.link_visits = visits
    return app
