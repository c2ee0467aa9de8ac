"""The console's one-off commands: `postrelay reindex [--rebuild]` and `postrelay demo [--pieces N]`.

Both find their config and Redis as the operator commands do (`postrelay.cli.common`); `demo` starts the
embedded Redis itself (AOF under `[server] data_dir`, where `postrelay run` finds the data) when there is none.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import click

from postrelay.cli.common import CONFIG_ERROR, OK, Target, Unreachable, config_option, operator_config
from postrelay.core.config import Config, load_runtime_config

progress_option = click.option("--no-progress", "no_progress", is_flag=True, help="no progress bar on stderr")


class Bar:
    """`progress(done, total)` drawn with click's progress bar on stderr."""

    def __init__(self, label: str, enabled: bool) -> None:
        self.label, self.enabled = label, enabled
        self._bar: Any = None
        self._done = 0

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self._bar is None:
            self._bar = click.progressbar(length=max(total, 1), label=self.label, file=sys.stderr,
                                          show_pos=True)
            self._bar.__enter__()
        self._bar.update(done - self._done)
        self._done = done
        if done >= total:
            self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None


def _stores(config: Config) -> tuple[Any, Any]:
    """(mailpiece store, queue Redis) sync clients."""
    from postrelay.core.redis_url import sync_client

    server = config.server
    queue = sync_client(server.queue_redis_url or server.redis_url, server.redis_timeout)  # type: ignore[arg-type]
    pieces = sync_client(server.redis_url, server.redis_timeout) if server.split_stores else queue  # type: ignore[arg-type]
    return pieces, queue


@contextmanager
def _redis_for_demo(path: str | None) -> Iterator[Config]:
    """The configured (or running `postrelay run`'s) Redis, else an embedded one started for the command."""
    try:
        yield operator_config(path)
        return
    except Unreachable:
        pass
    from postrelay.core.embedded import EmbeddedRedis

    config = load_runtime_config(path)
    redis = EmbeddedRedis(config.server.data_dir, config.server.appendfsync).start()
    config.server.redis_url = redis.url
    Target.url, Target.origin = redis.url, f"the embedded Redis started in {redis.dir}"
    click.echo(f"postrelay: embedded Redis at {redis.url} (data in {redis.dir})", err=True)
    try:
        yield config
    finally:
        redis.stop()


@click.command("reindex", short_help="build the console's indexes for data stored before them")
@config_option
@click.option("--rebuild", is_flag=True, help="drop every index first (stop the workers meanwhile); "
                                               "default: add what is missing, safe while running")
@progress_option
def reindex(config: str | None, rebuild: bool, no_progress: bool) -> int:
    """Apply every stored event to the console's indexes again (idempotent: nothing counts twice)."""
    from postrelay.core.stores.reindex import reindex as run_reindex

    cfg = operator_config(config)
    pieces, queue = _stores(cfg)
    bar = Bar("reindex", not no_progress)
    try:
        counts = run_reindex(pieces, queue, cfg.server.timeline_retention, bar, rebuild=rebuild)
    finally:
        bar.close()
    click.echo(f"indexed {counts['pieces']} mailpiece(s), {counts['events']} event(s)"
               + (f"; {counts['skipped']} unreadable event(s) skipped" if counts["skipped"] else ""))
    return OK


@click.command("demo", short_help="fill Redis with a demo data set for the console")
@config_option
@click.option("--pieces", type=int, default=3000, show_default=True, help="mailpieces to make")
@click.option("--campaigns", type=int, default=4, show_default=True, help="campaigns")
@click.option("--seed", type=int, default=14, show_default=True, help="random seed (same seed, same data)")
@progress_option
def demo(config: str | None, pieces: int, campaigns: int, seed: int, no_progress: bool) -> int:
    """A realistic data set: US and Canadian timelines, returns, visits, a failing destination (`erp`)."""
    from postrelay.core import demo as data

    if pieces < 1 or campaigns < 1:
        click.echo("demo: --pieces and --campaigns must be at least 1", err=True)
        return CONFIG_ERROR
    with _redis_for_demo(config) as cfg:
        piece_store, queue = _stores(cfg)
        bar = Bar("demo", not no_progress)
        try:
            counts = data.load(piece_store, queue, cfg, data.Plan(pieces=pieces, campaigns=campaigns, seed=seed),
                               progress=bar, on_events=followup_scheduler(cfg, piece_store, queue))
        finally:
            bar.close()
    click.echo(f"demo: {counts['pieces']} mailpieces, {counts['events']} events, {counts['dead_letters']} dead "
               f"letters in {campaigns} campaign(s); `postrelay run` and open /ui/ (sign in with an API token)")
    return OK


def followup_scheduler(config: Config, pieces: Any, queue: Any) -> Callable[[list[Any]], None] | None:
    """Schedules the follow-ups of the last day's events with the worker's own handler (older ones would be due
    at once)."""
    if not config.followups:
        return None
    from postrelay.workers.followups import FollowupHandler
    from postrelay.workers.runtime import Runtime

    handler = FollowupHandler(Runtime(config=config, redis=queue, pieces=pieces))
    since = datetime.now(UTC) - timedelta(days=1)

    def schedule(events: list[Any]) -> None:
        recent = [e for e in events if e.occurred_at >= since]
        if recent:
            pipe = queue.pipeline(transaction=True)
            handler.stage(pipe, recent)
            pipe.execute()

    return schedule
