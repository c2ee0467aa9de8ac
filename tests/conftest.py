"""Shared fixtures: one real redis-server per test session, flushed before each test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from tests.support.redis_cluster import RedisCluster
from tests.support.redis_server import RedisServer

# Long tests (seconds of real processes each) run first, so that the `pytest -n` test processes finish together
# instead of one of them starting a long test last.
LONG_FIRST = ("tests/mailings/test_kill.py", "tests/console/")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Reorder (stable): the long tests of LONG_FIRST first, in that order, then everything else as collected."""
    def rank(item: pytest.Item) -> int:
        return next((i for i, prefix in enumerate(LONG_FIRST) if item.nodeid.startswith(prefix)), len(LONG_FIRST))

    items.sort(key=rank)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print every fault report (tests/faults: `sent=N accepted=N lost=0 duplicated=0`), whatever `-s`/`-q` say.

    The lines travel on the test reports' `user_properties`, so this works with pytest-xdist workers too.
    """
    lines = [value for reports in terminalreporter.stats.values() for rep in reports
             for key, value in getattr(rep, "user_properties", ()) if key == "fault_report"]
    if lines:
        soak = os.environ.get("POSTRELAY_SOAK", "") not in ("", "0")
        terminalreporter.section("postrelay fault report" + (" (soak)" if soak else " (short mode)"))
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.cleanup()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    yield redis_server.url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    """A real 3-master Redis Cluster for the session (fails, never skips, when it cannot start)."""
    for attempt in range(2):  # a second try on fresh ports: another process may take a port in between
        try:
            cluster = RedisCluster().start()
            break
        except RuntimeError as exc:
            if attempt:
                pytest.fail(f"Redis Cluster did not start: {exc}")
    yield cluster
    cluster.stop()


@pytest.fixture
def cluster_url(redis_cluster: RedisCluster) -> str:
    """The cluster's `redis+cluster://` URL, every node flushed."""
    redis_cluster.flushall()
    return redis_cluster.url


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Undo `setup_logging` (root handlers and level) after a test."""
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
    for h in handlers:
        if h not in root.handlers:
            root.addHandler(h)
    root.setLevel(level)
