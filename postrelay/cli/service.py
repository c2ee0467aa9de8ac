"""The long-running commands: `run` (receiver + worker + embedded Redis), `serve` (receiver), `worker`.

Each validates the whole config before it listens or consumes (the same lines as `check-config`, exit 2) and
binds its port before anything says "receiving" (a taken port: one line, exit 4). `run` supervises its parts:
when the worker, the receiver or the embedded Redis dies, it stops the rest and exits 1; on SIGTERM or SIGINT
it stops them in order (receiver, worker, Redis) and says what it stopped.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
from typing import Any

import click

from postrelay.cli.common import FAILED, INTERRUPTED, OK, PORT_IN_USE, config_option, require_redis_url
from postrelay.cli.validate import validated
from postrelay.core.config import CONFIG_ENV, Config


class CannotListen(Exception):
    """The listen address is taken or not ours to bind (exit code 4)."""

    exit_code = PORT_IN_USE


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on host:port, bound now so that a taken port fails before anything starts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        why = "the port is already in use (another postrelay?)" if exc.errno == errno.EADDRINUSE else (
            exc.strerror or type(exc).__name__)
        raise CannotListen(f"cannot listen on {host}:{port}: {why}; choose another with --port "
                           f"(make run PORT=...) or [server] port") from None
    sock.set_inheritable(True)
    return sock


def _address(config: Config, host: str | None, port: int | None) -> tuple[str, int]:
    return host or config.server.host, port if port is not None else config.server.port


def _setup_logs(config: Config, log_format: str | None) -> None:
    """JSON (or text) logs with the config's secrets redacted; child processes inherit the format."""
    from postrelay.core.logs import LOG_FORMAT_ENV, setup_from_config

    os.environ[LOG_FORMAT_ENV] = setup_from_config(config, log_format)


def _server(config: Config) -> Any:
    """A uvicorn server for the receiver app; its own records go through the root handler (log_config=None)."""
    import uvicorn

    from postrelay.receiver.app import create_app
    from postrelay.receiver.server import uvicorn_options

    return uvicorn.Server(uvicorn.Config(create_app(config), log_level="warning", access_log=False,
                                         log_config=None, lifespan="on", **uvicorn_options(config)))


def _say_receiving(host: str, port: int, workers: int) -> None:
    """One log line once the port is ours: a newcomer sees that `serve` is up (uvicorn's own lines are off)."""
    import logging

    logging.getLogger("postrelay.serve").info("receiving on http://%s:%d (%d process(es)); stop with Ctrl-C or "
                                              "SIGTERM", host, port, workers)


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


def _serve_processes(config: Config, host: str, port: int, workers: int) -> None:
    import shutil

    import uvicorn

    from postrelay.receiver.server import uvicorn_options

    listen(host, port).close()  # uvicorn's supervisor binds it again: fail early, with our message
    _say_receiving(host, port, workers)
    made = _multiproc_metrics_dir()
    try:
        uvicorn.run("postrelay.receiver.asgi:make_app", factory=True, host=host, port=port, workers=workers,
                    log_level="warning", access_log=False, proxy_headers=True, log_config=None,
                    **uvicorn_options(config))
    finally:
        if made:
            shutil.rmtree(made, ignore_errors=True)


host_option = click.option("--host", default=None, help="listen address (default: [server] host or 127.0.0.1)")
port_option = click.option("--port", type=click.IntRange(0, 65535), default=None,
                           help="listen port (default: [server] port or 8000)")
log_format_option = click.option("--log-format", type=click.Choice(["json", "text"]), default=None,
                                 help="log lines as JSON objects or plain text (default: [server] log_format, json)")


@click.command("serve", short_help="receiver only (N uvicorn processes with --workers N)")
@config_option
@host_option
@port_option
@log_format_option
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, help="uvicorn worker processes")
def serve(config: str | None, host: str | None, port: int | None, log_format: str | None, workers: int) -> int:
    """Receiver only, against the configured Redis."""
    cfg = validated(config)
    require_redis_url(cfg, config, "serve")
    if config:
        os.environ[CONFIG_ENV] = os.path.abspath(config)
    _setup_logs(cfg, log_format)
    host, port = _address(cfg, host, port)
    if workers > 1:
        _serve_processes(cfg, host, port, workers)
    else:
        sock = listen(host, port)
        _say_receiving(host, port, 1)
        _server(cfg).run(sockets=[sock])
    return OK


@click.command("worker", short_help="dispatcher, delivery executor, due-time loop, follow-ups")
@config_option
@log_format_option
@click.option("--burst", is_flag=True, help="exit when the delivery queue is empty")
def worker(config: str | None, log_format: str | None, burst: bool) -> int:
    """Queue consumer, deliveries and schedulers, against the configured Redis."""
    from postrelay.workers.worker import run_worker

    cfg = validated(config)
    require_redis_url(cfg, config, "worker")
    _setup_logs(cfg, log_format)
    run_worker(cfg, burst=burst)
    return OK


@click.command("run", short_help="receiver + worker (+ embedded Redis when no redis_url)")
@config_option
@host_option
@port_option
@log_format_option
def run(config: str | None, host: str | None, port: int | None, log_format: str | None) -> int:
    """Receiver + worker (+ an embedded Redis when no redis_url is configured), stopped together."""
    from postrelay.cli.supervise import Supervisor

    cfg = validated(config)
    _setup_logs(cfg, log_format)
    host, port = _address(cfg, host, port)
    sock = listen(host, port)
    sup = Supervisor(cfg, os.path.abspath(config) if config else os.environ.get(CONFIG_ENV), log_format)
    with sup.signals():
        try:
            sup.start_redis()
            sup.start_worker()
            sup.serve(_server(cfg), sock, f"receiving on http://{host}:{port} (worker pid {sup.worker_pid}); "
                                          f"stop with Ctrl-C or SIGTERM")
        except sup.Stopped:
            pass
        finally:
            sock.close()
            sup.stop()
    if sup.died:
        return FAILED
    return INTERRUPTED if sup.signal == signal.SIGINT else OK
