"""The webhook route's endpoint: `POST /webhooks/{source}` and `POST /webhooks/postalytics/{token}`.

A plain ASGI app in the router (Starlette's `Route` takes one as its endpoint), because this route carries
the load: no `Request`, no `request_response` wrapper, no `JSONResponse` per request. The work and its
counters are `Receiver.ingest_request` (body limits, signature checks, normalization, the Redis round
trip, `postrelay_events_*` and the ingest histogram); the answer is `{"accepted","duplicates","ignored"}`
(as `JSONResponse` renders it), or an `HTTPError` (e.g. 503 with `Retry-After`) rendered by `receiver.edge`,
which also logs and counts the request and turns a client that went away mid-body into a client abort.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.datastructures import Headers
from starlette.types import Receive, Scope, Send

from postrelay.receiver.requestlog import INFO_KEY

if TYPE_CHECKING:
    from postrelay.receiver.service import Receiver

_JSON = (b"content-type", b"application/json")


class WebhookEndpoint:
    """The ASGI endpoint of both webhook routes of one `Receiver` (see the module docstring)."""

    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        params = scope["path_params"]
        accepted, duplicates, ignored = await self.receiver.ingest_request(
            params.get("source", "postalytics"), params.get("token"), Headers(scope=scope), receive,
            scope.setdefault(INFO_KEY, {}))
        body = b'{"accepted":%d,"duplicates":%d,"ignored":%d}' % (accepted, duplicates, ignored)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"%d" % len(body)), _JSON]})
        await send({"type": "http.response.body", "body": body})
