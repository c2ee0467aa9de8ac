"""Fixtures for the action adapter tests: a shared httpx client and loopback vendor servers."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.support.http_server import Handler, LocalHTTPServer


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=2.0) as c:
        yield c


@pytest.fixture
def serve() -> Iterator[Callable[[Handler], LocalHTTPServer]]:
    """Start a LocalHTTPServer with a handler; stopped at teardown."""
    servers: list[LocalHTTPServer] = []

    def start(handler: Handler) -> LocalHTTPServer:
        server = LocalHTTPServer(handler)
        # a short poll interval makes shutdown at teardown take milliseconds instead of ~0.5 s
        server.thread = threading.Thread(target=server.server.serve_forever, kwargs={"poll_interval": 0.02},
                                         daemon=True)
        server.__enter__()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.__exit__(None, None, None)
