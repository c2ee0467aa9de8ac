"""`postrelay reindex [--rebuild]` and `postrelay demo [--pieces N]`: the console's one-off commands."""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

from postrelay.cli import COMMANDS
from postrelay.config import Config, load_runtime_config


class Bar:
    """A progress bar on stderr: redrawn in place on a terminal, a line every few seconds otherwise."""

    def __init__(self, label: str, enabled: bool = True, stream: TextIO | None = None, width: int = 30) -> None:
        self.label, self.enabled, self.width = label, enabled, width
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last = 0.0

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        final = done >= total
        now = time.monotonic()
        if not (self.tty or final or now - self._last >= 5.0):
            return
        self._last = now
        filled = int(self.width * done / total) if total else self.width
        line = f"{self.label} [{'#' * filled}{'-' * (self.width - filled)}] {done}/{total}"
        if self.tty:
            self.stream.write("\r" + line + "\033[K" + ("\n" if final else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def _clients(config: Config) -> tuple[Any, Any, Any]:
    """(mailpiece store, queue Redis, embedded Redis or None) for the configured or an embedded Redis."""
    from postrelay.redis_url import sync_client

    embedded = None
    if not config.server.redis_url:
        from postrelay.embedded import EmbeddedRedis

        embedded = EmbeddedRedis(config.server.data_dir, config.server.appendfsync).start()
        config.server.redis_url = embedded.url
        print(f"postrelay: embedded Redis at {embedded.url} (data in {embedded.dir})", file=sys.stderr)
    server = config.server
    queue = sync_client(server.queue_redis_url or server.redis_url, server.redis_timeout)
    pieces = sync_client(server.redis_url, server.redis_timeout) if server.split_stores else queue
    return pieces, queue, embedded


def _configure_reindex(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rebuild", action="store_true",
                   help="drop every index first (stop the workers meanwhile); default: add what is missing")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def _run_reindex(args: argparse.Namespace) -> int:
    from postrelay.stores.reindex import reindex

    config = load_runtime_config(args.config)
    pieces, queue, embedded = _clients(config)
    try:
        counts = reindex(pieces, queue, config.server.timeline_retention, Bar("reindex", not args.no_progress),
                         rebuild=args.rebuild)
    finally:
        if embedded:
            embedded.stop()
    print(f"indexed {counts['pieces']} mailpiece(s), {counts['events']} event(s)"
          + (f"; {counts['skipped']} unreadable event(s) skipped" if counts["skipped"] else ""))
    return 0


def _configure_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pieces", type=int, default=3000, help="mailpieces to make (default 3000)")
    p.add_argument("--campaigns", type=int, default=4, help="campaigns (default 4)")
    p.add_argument("--seed", type=int, default=14, help="random seed (the same seed makes the same data)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def _run_demo(args: argparse.Namespace) -> int:
    from postrelay import demo

    config = load_runtime_config(args.config)
    if args.pieces < 1 or args.campaigns < 1:
        print("demo: --pieces and --campaigns must be at least 1", file=sys.stderr)
        return 2
    pieces, queue, embedded = _clients(config)
    try:
        schedule = _followup_scheduler(config, pieces, queue)
        plan = demo.Plan(pieces=args.pieces, campaigns=args.campaigns, seed=args.seed)
        counts = demo.load(pieces, queue, config, plan, progress=Bar("demo", not args.no_progress),
                           on_events=schedule)
    finally:
        if embedded:
            embedded.stop()
    print(f"demo: {counts['pieces']} mailpieces, {counts['events']} events, {counts['dead_letters']} dead letters "
          f"in {args.campaigns} campaign(s); start `postrelay run` and open /ui/ (sign in with an API token)")
    return 0


def _followup_scheduler(config: Config, pieces: Any, queue: Any) -> Any:
    """Schedules the follow-ups of the last day's events with the worker's own handler (older ones would be due)."""
    if not config.followups:
        return None
    from workers.followups import FollowupHandler
    from workers.runtime import Runtime

    handler = FollowupHandler(Runtime(config=config, redis=queue, pieces=pieces))
    since = datetime.now(UTC) - timedelta(days=1)

    def schedule(events: list[Any]) -> None:
        recent = [e for e in events if e.occurred_at >= since]
        if recent:
            pipe = queue.pipeline(transaction=True)
            handler.stage(pipe, recent)
            pipe.execute()

    return schedule


COMMANDS.append(("reindex", "build the console's indexes for data stored before them", _configure_reindex,
                 _run_reindex))
COMMANDS.append(("demo", "fill Redis with a demo data set for the console", _configure_demo, _run_demo))
