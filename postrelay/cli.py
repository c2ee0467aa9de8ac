"""The `postrelay` command: run, serve, worker, check-config, dlq, destinations.

Other modules add subcommands by appending `(name, help, configure(parser), handler(args) -> int)` to
`COMMANDS` (see `postrelay.commands`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from datetime import UTC, datetime

from postrelay.config import CONFIG_ENV, REDIS_URL_ENV, Config, ConfigError, load_runtime_config


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help=f"TOML config (default: ${CONFIG_ENV})")


def _add_log_format(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-format", choices=["json", "text"], default=None,
                   help="log lines as JSON objects or plain text (default: [server] log_format, json)")


def _setup_logs(config: Config, args: argparse.Namespace) -> None:
    """JSON (or text) logs with the config's secrets redacted; child processes inherit the format."""
    from postrelay.logs import LOG_FORMAT_ENV, setup_from_config

    os.environ[LOG_FORMAT_ENV] = setup_from_config(config, getattr(args, "log_format", None))


def _multiproc_metrics_dir() -> str | None:
    """Prometheus multiprocess mode for `serve --workers N`: a fresh directory (returned when we made it)."""
    import glob
    import tempfile

    existing = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if existing:
        os.makedirs(existing, exist_ok=True)
        for stale in glob.glob(os.path.join(existing, "*.db")):  # counters of a previous run
            os.remove(stale)
        return None
    made = tempfile.mkdtemp(prefix="postrelay-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = made
    return made


def _add_listen(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", help="listen address (default: [server] host or 127.0.0.1)")
    p.add_argument("--port", type=int, help="listen port (default: [server] port or 8000)")


def _config(args: argparse.Namespace) -> Config:
    return load_runtime_config(args.config)


def _uvicorn(config: Config, args: argparse.Namespace, workers: int = 1) -> None:
    import uvicorn

    from receiver.server import uvicorn_options

    host = args.host or config.server.host
    port = args.port if args.port is not None else config.server.port
    # log_config=None: uvicorn's own records go through the root handler (JSON, redacted) too.
    if workers > 1:
        import shutil

        made = _multiproc_metrics_dir()
        try:
            uvicorn.run("receiver.asgi:make_app", factory=True, host=host, port=port, workers=workers,
                        log_level="warning", access_log=False, proxy_headers=True, log_config=None,
                        **uvicorn_options(config))
        finally:
            if made:
                shutil.rmtree(made, ignore_errors=True)
    else:
        from receiver.app import create_app

        uvicorn.run(create_app(config), host=host, port=port, log_level="warning", access_log=False,
                    log_config=None, **uvicorn_options(config))


def cmd_serve(args: argparse.Namespace) -> int:
    """Receiver only, against the configured Redis."""
    config = _config(args)
    if not config.server.redis_url:
        raise ConfigError("server.redis_url: required for `serve` (use `postrelay run` for an embedded Redis)")
    if args.config:
        os.environ[CONFIG_ENV] = os.path.abspath(args.config)
    _setup_logs(config, args)
    _uvicorn(config, args, workers=args.workers)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """Queue consumer, deliveries and schedulers, against the configured Redis."""
    from workers.worker import run_worker

    config = _config(args)
    if not config.server.redis_url:
        raise ConfigError("server.redis_url: required for `worker` (use `postrelay run` for an embedded Redis)")
    _setup_logs(config, args)
    run_worker(config, burst=args.burst)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Receiver + worker (+ an embedded Redis when no redis_url is configured), stopped together."""
    from postrelay.embedded import EmbeddedRedis

    config = _config(args)
    _setup_logs(config, args)
    embedded = None
    if not config.server.redis_url:
        embedded = EmbeddedRedis(config.server.data_dir, config.server.appendfsync).start()
        config.server.redis_url = embedded.url
        print(f"postrelay: embedded Redis at {embedded.url} (data in {embedded.dir})", file=sys.stderr)
    env = dict(os.environ, **{REDIS_URL_ENV: config.server.redis_url})
    if args.config:
        env[CONFIG_ENV] = os.path.abspath(args.config)
    worker = subprocess.Popen([sys.executable, "-m", "postrelay.cli", "worker"], env=env)
    try:
        host = args.host or config.server.host
        port = args.port if args.port is not None else config.server.port
        print(f"postrelay: receiving on http://{host}:{port} (worker pid {worker.pid})", file=sys.stderr)
        _uvicorn(config, args)
    finally:
        worker.terminate()
        try:
            worker.wait(15)
        except subprocess.TimeoutExpired:
            worker.kill()
        if embedded:
            embedded.stop()
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    """Validate a config file, including every destination's adapter settings."""
    import httpx

    from workers.runtime import build_adapters

    path = args.file or args.config
    config = load_runtime_config(path)
    with httpx.Client() as client:
        try:
            build_adapters(config, client)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    sources = [s for s in ("postgrid", "lob", "postalytics", "generic") if getattr(config.sources, s)]
    print(f"ok: {len(sources)} source(s) {sources}, {len(config.destinations)} destination(s), "
          f"{len(config.routes)} route(s), {len(config.followups)} follow-up rule(s)")
    return 0


def _runtime(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from workers.runtime import from_config

    return from_config(_config(args))


def _parse_since(text: str | None) -> float | None:
    if not text:
        return None
    from postrelay.durations import parse_seconds

    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
    except ValueError:
        return datetime.now(UTC).timestamp() - parse_seconds(text)


def cmd_dlq(args: argparse.Namespace) -> int:
    """List or replay dead-lettered deliveries."""
    from postrelay.stores import dlq

    rt = _runtime(args)
    since = _parse_since(args.since)
    if args.dlq_command == "replay":
        counts = dlq.replay(rt.redis, rt.clock(), args.destination, since)
        print(f"replayed {counts['replayed']} delivery(ies); skipped {counts['skipped_done']} already delivered")
        return 0
    entries = dlq.entries(rt.redis, args.destination, since, limit=args.limit)
    if args.json:
        print(json.dumps(entries, indent=2))
        return 0
    if not entries:
        print("dead-letter store is empty")
    for e in entries:
        last = e["attempts"][-1] if e["attempts"] else {}
        print(f"{e['dead_at']}  {e['destination']:<16} {e['event_id']}  attempts={len(e['attempts'])}  "
              f"status={last.get('status')}  reason={e['reason'][:120]}")
    return 0


def cmd_destinations(args: argparse.Namespace) -> int:
    """Show each destination's circuit, backlog and last error; pause or resume one."""
    from postrelay.stores import destinations

    rt = _runtime(args)
    action = args.dest_command or "list"
    if action in {"pause", "resume"}:
        if args.name not in rt.config.destinations:
            print(f"unknown destination {args.name!r}", file=sys.stderr)
            return 2
        if action == "pause":
            destinations.pause(rt.redis, args.name)
            print(f"paused {args.name}: deliveries wait until `postrelay destinations resume {args.name}`")
        else:
            n = destinations.resume(rt.redis, rt.config, args.name, rt.clock())
            print(f"resumed {args.name}: {n} parked delivery(ies) re-queued")
        return 0
    rows = destinations.report(rt.redis, rt.config, rt.clock())
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'destination':<18}{'type':<12}{'state':<11}{'paused':<8}{'backlog':>8}{'dead':>6}  last error")
    for row in rows:
        print(f"{row['name']:<18}{row['type']:<12}{row['state']:<11}{'yes' if row['paused'] else 'no':<8}"
              f"{row['backlog']:>8}{row['dead']:>6}  {(row['last_error'] or '')[:70]}")
    return 0


Command = tuple[str, str, object, object]
COMMANDS: list[Command] = []


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="postrelay", description="Mail-event webhook receiver and status relay")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="receiver + worker (+ embedded Redis when no redis_url)")
    _add_config(p)
    _add_listen(p)
    _add_log_format(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("serve", help="receiver only")
    _add_config(p)
    _add_listen(p)
    _add_log_format(p)
    p.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (default 1)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("worker", help="queue consumer, deliveries, follow-ups")
    _add_config(p)
    _add_log_format(p)
    p.add_argument("--burst", action="store_true", help="exit when the delivery queue is empty")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("check-config", help="validate a config file")
    p.add_argument("file", nargs="?", help="config file (or --config / $POSTRELAY_CONFIG)")
    _add_config(p)
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("dlq", help="dead-lettered deliveries")
    dsub = p.add_subparsers(dest="dlq_command", required=True)
    for name in ("list", "replay"):
        q = dsub.add_parser(name, help=f"{name} dead-lettered deliveries")
        _add_config(q)
        q.add_argument("--destination", metavar="D", help="only this destination")
        q.add_argument("--since", metavar="T", help="ISO time, or a duration ago such as 2h or 3d")
        if name == "list":
            q.add_argument("--limit", type=int, default=None)
            q.add_argument("--json", action="store_true")
        q.set_defaults(func=cmd_dlq)

    p = sub.add_parser("destinations", help="destination states; pause/resume one")
    _add_config(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_destinations, dest_command=None)
    dsub = p.add_subparsers(dest="dest_command")
    for name in ("pause", "resume"):
        q = dsub.add_parser(name, help=f"{name} a destination")
        q.add_argument("name")
        _add_config(q)
        q.set_defaults(func=cmd_destinations, json=False)

    for name, help_text, configure, handler in COMMANDS:
        q = sub.add_parser(name, help=help_text)
        _add_config(q)
        configure(q)  # type: ignore[operator]
        q.set_defaults(func=handler)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: errors in the config or in Redis access print one clear line, no traceback."""
    import redis

    from postrelay import commands  # noqa: F401  (registers extra subcommands)

    logging.basicConfig(level=os.environ.get("POSTRELAY_LOG_LEVEL", "WARNING"))
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    except (redis.ConnectionError, redis.exceptions.RedisClusterException) as exc:
        print(f"cannot reach Redis: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    from postrelay.cli import main as _main  # the registered module, so extra commands attach to it

    sys.exit(_main())
