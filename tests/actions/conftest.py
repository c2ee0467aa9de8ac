"""Fixtures for the action adapter tests: a shared httpx client and loopback vendor servers."""

from __future__ import annotations

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
        server = LocalHTTPServer(handler).__enter__()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.__exit__(None, None, None)
