"""Operator commands on a running system: `status`, `dlq list|replay`, `destinations [pause|resume NAME]`,
`backfill postgrid|lob`. Each finds its config and Redis as `postrelay.cli.common` describes."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import click

from postrelay.cli.common import CONFIG_ERROR, FAILED, OK, config_option, json_option, operator_config, runtime
from postrelay.core.config import ConfigError
from postrelay.core.durations import parse_when


def _when(ctx: click.Context | None, param: click.Parameter | None, value: str | None) -> float | None:
    """`--since T` / `--until T` as epoch seconds: an ISO time, or a duration ago such as 2h or 3d."""
    if not value:
        return None
    try:
        return parse_when(value).timestamp()
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


since_option = click.option("--since", metavar="T", callback=_when,
                            help="ISO time (UTC unless an offset is given), or a duration ago such as 2h or 3d")


@click.command("status", short_help="one screen: queues, workers, destinations, DLQ, follow-ups")
@config_option
@json_option
def status(config: str | None, as_json: bool) -> int:
    """One-screen summary: queues, workers, destinations, DLQ, follow-ups, recent events."""
    from postrelay.cli.status import gather, render

    rt = runtime(config)
    try:
        data = gather(rt)
    finally:
        rt.close()
    click.echo(json.dumps(data, indent=2) if as_json else render(data))
    return OK


@click.group("dlq", short_help="dead-lettered deliveries: list, replay")
def dlq() -> None:
    """Dead-lettered deliveries: list, replay."""


@dlq.command("list")
@config_option
@click.option("--destination", metavar="D", help="only this destination")
@since_option
@click.option("--limit", type=click.IntRange(min=1), default=None, help="at most this many entries (the newest)")
@json_option
def dlq_list(config: str | None, destination: str | None, since: float | None, limit: int | None,
             as_json: bool) -> int:
    """List dead-lettered deliveries, newest first."""
    from postrelay.core.stores import dlq as store

    rt = runtime(config)
    entries = store.entries(rt.redis, destination, since, limit=limit, newest_first=True)
    if as_json:
        click.echo(json.dumps(entries, indent=2))
        return OK
    if not entries:
        click.echo("dead-letter store is empty")
    for e in entries:
        last = e["attempts"][-1] if e["attempts"] else {}
        click.echo(f"{e['dead_at']}  {e['destination']:<16} {e['event_id']}  attempts={len(e['attempts'])}  "
                   f"status={last.get('status')}  reason={e['reason'][:120]}")
    return OK


@dlq.command("replay")
@config_option
@click.option("--destination", metavar="D", help="only this destination")
@since_option
def dlq_replay(config: str | None, destination: str | None, since: float | None) -> int:
    """Re-deliver dead-lettered deliveries (never one that already succeeded)."""
    from postrelay.core.stores import dlq as store

    rt = runtime(config)
    counts = store.replay(rt.redis, rt.clock(), destination, since)
    click.echo(f"replayed {counts['replayed']} delivery(ies); skipped {counts['skipped_done']} already delivered")
    return OK


@click.group("destinations", invoke_without_command=True, short_help="destination states; pause/resume one")
@config_option
@json_option
@click.pass_context
def destinations(ctx: click.Context, config: str | None, as_json: bool) -> int | None:
    """Each destination's circuit, backlog, dead letters and last error; pause or resume one."""
    ctx.obj = {"config": config}
    if ctx.invoked_subcommand is not None:
        return None
    from postrelay.core.stores import destinations as store

    rt = runtime(config)
    rows = store.report(rt.redis, rt.config, rt.clock())
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return OK
    if not rows:
        click.echo("no destinations configured (one [destinations.NAME] table each: docs/adapters.md)")
        return OK
    click.echo(f"{'destination':<18}{'type':<12}{'state':<11}{'paused':<8}{'backlog':>8}{'dead':>6}  last error")
    for row in rows:
        click.echo(f"{row['name']:<18}{row['type']:<12}{row['state']:<11}{'yes' if row['paused'] else 'no':<8}"
                   f"{row['backlog']:>8}{row['dead']:>6}  {(row['last_error'] or '')[:70]}")
    return OK


def _pause_or_resume(ctx: click.Context, action: str, name: str, config: str | None) -> int:
    from postrelay.core.stores import destinations as store

    rt = runtime(config or (ctx.obj or {}).get("config"))
    if name not in rt.config.destinations:
        click.echo(f"unknown destination {name!r}; known: {', '.join(rt.config.destinations) or 'none'}", err=True)
        return CONFIG_ERROR
    if action == "pause":
        store.pause(rt.redis, name)
        click.echo(f"paused {name}: deliveries wait until `postrelay destinations resume {name}`")
        return OK
    n = store.resume(rt.redis, rt.config, name, rt.clock())
    click.echo(f"resumed {name}: {n} parked delivery(ies) re-queued")
    return OK


@destinations.command("pause")
@click.argument("name")
@config_option
@click.pass_context
def destinations_pause(ctx: click.Context, name: str, config: str | None) -> int:
    """Park a destination's deliveries until it is resumed."""
    return _pause_or_resume(ctx, "pause", name, config)


@destinations.command("resume")
@click.argument("name")
@config_option
@click.pass_context
def destinations_resume(ctx: click.Context, name: str, config: str | None) -> int:
    """Re-queue a paused destination's deliveries and reset its circuit."""
    return _pause_or_resume(ctx, "resume", name, config)


@click.command("backfill", short_help="ingest missed events from PostGrid's or Lob's events list API")
@click.argument("source", type=click.Choice(["postgrid", "lob"]))
@config_option
@click.option("--since", required=True, metavar="T",
              help="events created at or after T: ISO date/time (UTC unless an offset is given) or a duration ago "
                   "such as 36h or 3d")
@click.option("--until", metavar="T", help="events created before T (same formats)")
@click.option("--page-size", type=click.IntRange(min=1), default=100, metavar="N",
              help="events per API request (default 100)")
@click.option("--max-pages", type=click.IntRange(min=1), default=None, metavar="N", help="stop after N pages")
@click.option("--no-progress", is_flag=True, help="no progress line on stderr")
@json_option
def backfill(source: str, config: str | None, since: str, until: str | None, page_size: int,
             max_pages: int | None, no_progress: bool, as_json: bool) -> int:
    """Ingest missed events from PostGrid's or Lob's events list API (deduplicated against webhooks)."""
    return asyncio.run(_backfill(source, config, since, until, page_size, max_pages, no_progress, as_json))


async def _backfill(source: str, config_path: str | None, since_text: str, until_text: str | None,
                    page_size: int, max_pages: int | None, no_progress: bool, as_json: bool) -> int:
    from postrelay.core.redis_url import async_queue_client
    from postrelay.receiver.backfill import BackfillError, Progress, backfill
    from postrelay.receiver.ingest import IngestQueue

    config = operator_config(config_path)
    settings: Any = getattr(config.sources, source)
    if settings is None:
        raise ConfigError(f"sources.{source}: not configured (backfill feeds the same ingest as its webhooks)")
    if not settings.api_key:
        raise ConfigError(f"sources.{source}.api_key: required for backfill (the provider's API key)")
    try:
        since = parse_when(since_text)
        until = parse_when(until_text) if until_text else None
    except ValueError as exc:
        click.echo(f"backfill: {exc}", err=True)
        return CONFIG_ERROR
    if until is not None and until <= since:
        click.echo(f"backfill: --until {until_text} is not after --since {since_text}: no event can be in that range",
                   err=True)
        return CONFIG_ERROR
    # the ingest script's keys (stream, dedupe markers) live on the queue Redis
    redis = async_queue_client(config.server.queue_redis_url or "", max(5.0, config.server.redis_timeout))
    progress = Progress(f"backfill {source}", enabled=not no_progress)
    queue = IngestQueue(redis, config.server.dedupe_window)
    try:
        counts = await backfill(source, settings, queue, since, until,
                                page_size=page_size, max_pages=max_pages, progress=progress)
    except BackfillError as exc:
        click.echo(f"backfill {source}: {exc}", err=True)
        return FAILED
    finally:
        queue.close()
        await redis.aclose()
    if as_json:
        click.echo(json.dumps(counts.as_dict()))
    else:
        click.echo(f"backfill {source} since {since.isoformat()}: {counts.pages} page(s), {counts.seen} event(s) "
                   f"listed, {counts.accepted} queued, {counts.duplicates} duplicate(s) (already received), "
                   f"{counts.ignored} ignored (no tracking), {counts.out_of_range} outside the time range, "
                   f"{counts.invalid} unreadable, {counts.retries} retried request(s)")
    return OK
