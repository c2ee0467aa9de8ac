"""What every scenario shares: the profile, Redis, the request file, and launchers for servers and workers."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.payloads import RequestSet
from bench.procs import ROOT, BenchRedis, Proc, free_port, python
from bench.profiles import Profile

CONFIG = ROOT / "bench" / "bench.toml"


@dataclass
class Server:
    """A running HTTP server process and its port."""

    proc: Proc
    port: int


@dataclass
class Context:
    """Shared state of one benchmark run."""

    profile: Profile
    work: Path
    redis: BenchRedis
    ingest: RequestSet
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def logs(self) -> Path:
        """Directory of the children's logs."""
        path = self.work / "logs"
        path.mkdir(exist_ok=True)
        return path

    def env(self, sink_url: str = "") -> dict[str, str]:
        """Environment for postrelay processes (bench/bench.toml interpolates these)."""
        env = {"BENCH_REDIS_URL": self.redis.url, "POSTRELAY_LOG_LEVEL": "WARNING"}
        if sink_url:
            env["BENCH_SINK_URL"] = sink_url
            env["BENCH_SINK_BASE"] = sink_url.rsplit("/", 1)[0]  # the sink's origin (its /crm/ plays HubSpot)
        return env

    def _spawn(self, kind: str, workers: int, sink_url: str, config: Path = CONFIG) -> Server:
        """Start `postrelay serve` ("postrelay"; "postrelay-info" at the default log level) or a baseline."""
        port = free_port()
        env = self.env(sink_url)
        if kind.startswith("postrelay"):
            argv = python("-m", "postrelay.cli", "serve", "--config", str(config), "--host", "127.0.0.1",
                          "--port", str(port), "--workers", str(workers))
            if kind == "postrelay-info":
                env["POSTRELAY_LOG_LEVEL"] = "INFO"  # its log lines go to its log file, as under systemd
        else:
            argv = python("-m", "bench.baselines", kind, "--port", str(port), "--workers", str(workers))
        return Server(Proc(f"{kind}-w{workers}-{port}", argv, self.logs, env).start(), port)

    @contextmanager
    def servers(self, specs: list[tuple[str, int]], sink_url: str = "",
                config: Path = CONFIG) -> Iterator[dict[tuple[str, int], Server]]:
        """Start `postrelay serve` (kind "postrelay", with `config`) and/or baselines from bench.baselines, all
        at once; yields them by (kind, workers) once every one listens; stops them on exit."""
        started: dict[tuple[str, int], Server] = {}
        try:
            for kind, workers in specs:
                started[(kind, workers)] = self._spawn(kind, workers, sink_url, config)
            for srv in started.values():
                srv.proc.wait_port(srv.port)
            if any(w > 1 for _, w in specs):
                time.sleep(0.5)  # uvicorn's master listens before its workers are up
            yield started
        finally:
            for srv in started.values():
                srv.proc.stop()

    @contextmanager
    def server(self, kind: str, workers: int = 1, sink_url: str = "", config: Path = CONFIG) -> Iterator[Server]:
        """One server (see `servers`)."""
        with self.servers([(kind, workers)], sink_url, config) as started:
            yield started[(kind, workers)]

    @contextmanager
    def worker(self, sink_url: str, log_level: str = "WARNING", config: Path = CONFIG) -> Iterator[Proc]:
        """`postrelay worker` (with `config`), stopped on exit; waits for its first heartbeat."""
        env = {**self.env(sink_url), "POSTRELAY_LOG_LEVEL": log_level}
        proc = Proc(f"worker-{int(time.time() * 1000)}", python("-m", "postrelay.cli", "worker", "--config",
                                                                  str(config)), self.logs, env).start()
        try:
            deadline = time.monotonic() + 30
            while not self.redis.r.hlen("pr:workers"):
                if not proc.alive() or time.monotonic() > deadline:
                    raise RuntimeError(f"postrelay worker did not start: {proc.log_tail()}")
                time.sleep(0.05)
            yield proc
        finally:
            proc.stop()

    @contextmanager
    def sink(self) -> Iterator[Sink]:
        """The no-op webhook destination (bench.sink), stopped on exit."""
        port = free_port()
        proc = Proc(f"sink-{port}", python("-m", "bench.sink", "--port", str(port)), self.logs).start()
        try:
            proc.wait_port(port)
            yield Sink(proc, port)
        finally:
            proc.stop()


class Sink:
    """Client side of bench.sink."""

    def __init__(self, proc: Proc, port: int) -> None:
        self.proc = proc
        self.port = port
        self.url = f"http://127.0.0.1:{port}/hook"

    def _get(self, path: str, method: str = "GET") -> dict[str, Any]:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method, data=b"" if method == "POST"
                                     else None)
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def stats(self) -> dict[str, Any]:
        """Arrivals so far."""
        return self._get("/__stats")

    def count(self) -> int:
        """How many distinct webhooks arrived."""
        return int(self._get("/__count")["count"])

    def reset(self) -> None:
        """Forget arrivals."""
        self._get("/__reset", "POST")

    def wait_for(self, expected: int, timeout: float) -> int:
        """Poll until `expected` webhooks arrived or `timeout` passed; returns the count."""
        deadline = time.monotonic() + timeout
        count = self.count()
        while count < expected and time.monotonic() < deadline:
            time.sleep(0.2)
            count = self.count()
        return count
