"""`postrelay status [--json]` and `postrelay backfill postgrid|lob --since T [--until T]`."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from postrelay.cli import COMMANDS
from postrelay.config import ConfigError, load_runtime_config


def _configure_status(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _run_status(args: argparse.Namespace) -> int:
    from postrelay.status import gather, render
    from workers.runtime import from_config

    rt = from_config(load_runtime_config(args.config))
    try:
        data = gather(rt)
    finally:
        rt.close()
    print(json.dumps(data, indent=2) if args.json else render(data))
    return 0


def _configure_backfill(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", choices=["postgrid", "lob"])
    p.add_argument("--since", required=True, metavar="T",
                   help="events created at or after T: ISO date/time (UTC unless an offset is given) or a duration "
                        "ago such as 36h or 3d")
    p.add_argument("--until", metavar="T", help="events created before T (same formats)")
    p.add_argument("--page-size", type=int, default=100, metavar="N", help="events per API request (default 100)")
    p.add_argument("--max-pages", type=int, default=None, metavar="N", help="stop after N pages")
    p.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    p.add_argument("--json", action="store_true", help="print the final counts as JSON")


async def _backfill(args: argparse.Namespace) -> int:
    from postrelay.redis_url import async_queue_client
    from receiver.backfill import BackfillError, Progress, backfill, parse_when
    from receiver.ingest import IngestQueue

    config = load_runtime_config(args.config)
    settings = getattr(config.sources, args.source)
    if settings is None:
        raise ConfigError(f"sources.{args.source}: not configured (backfill feeds the same ingest as its webhooks)")
    if not settings.api_key:
        raise ConfigError(f"sources.{args.source}.api_key: required for backfill (the provider's API key)")
    if not config.server.redis_url:
        raise ConfigError("server.redis_url: required for backfill")
    try:
        since = parse_when(args.since)
        until = parse_when(args.until) if args.until else None
    except ValueError as exc:
        print(f"backfill: {exc}", file=sys.stderr)
        return 2
    # the ingest script's keys (stream, dedupe markers) live on the queue Redis
    redis = async_queue_client(config.server.queue_url or config.server.redis_url, max(5.0, config.server.redis_timeout))
    progress = Progress(f"backfill {args.source}", enabled=not args.no_progress)
    try:
        counts = await backfill(args.source, settings, IngestQueue(redis, config.server.dedupe_window), since, until,
                                page_size=args.page_size, max_pages=args.max_pages, progress=progress)
    except BackfillError as exc:
        print(f"backfill {args.source}: {exc}", file=sys.stderr)
        return 1
    finally:
        await redis.aclose()
    if args.json:
        print(json.dumps(counts.as_dict()))
    else:
        print(f"backfill {args.source} since {since.isoformat()}: {counts.pages} page(s), {counts.seen} event(s) "
              f"listed, {counts.accepted} queued, {counts.duplicates} duplicate(s) (already received), "
              f"{counts.ignored} ignored (no tracking), {counts.out_of_range} outside the time range, "
              f"{counts.invalid} unreadable, {counts.retries} retried request(s)")
    return 0


def _run_backfill(args: argparse.Namespace) -> int:
    return asyncio.run(_backfill(args))


COMMANDS.append(("status", "one-screen summary: queues, workers, destinations, DLQ, follow-ups, recent events",
                 _configure_status, _run_status))
COMMANDS.append(("backfill", "ingest missed events from PostGrid's or Lob's events list API (deduplicated)",
                 _configure_backfill, _run_backfill))
