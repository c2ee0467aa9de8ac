"""Starting, watching and stopping the processes of a run: Redis, servers, workers, the sink.

Every child runs in its own session (process group == its pid), so stopping it also stops the uvicorn
workers it spawned, and nothing else. Peak RSS is read from `/proc/<pid>/status` `VmHWM` (the kernel's
high-water mark), for the process and each descendant.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import redis

from tests.support.redis_server import RedisServer, free_port

ROOT = Path(__file__).resolve().parent.parent


class Proc:
    """One child process with its log file."""

    def __init__(self, name: str, argv: list[str], log_dir: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_dir / f"{name}.log"
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The child's pid."""
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> Proc:
        """Spawn in a new session, output to the log file."""
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self.argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        log.close()
        return self

    def wait_port(self, port: int, timeout: float = 20.0) -> Proc:
        """Block until `port` accepts connections; RuntimeError (with the log tail) if the child died."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {self.log_tail()}")
            with socket.socket() as s:
                s.settimeout(0.2)
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return self
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not listen on {port} within {timeout:.0f} s: {self.log_tail()}")

    def alive(self) -> bool:
        """True while the child runs."""
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, chars: int = 1500) -> str:
        """The end of the child's log."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def peak_rss_mb(self) -> dict[int, float]:
        """VmHWM in MB of the child and each of its descendants, by pid."""
        if not self.alive():
            return {}
        out = {}
        for pid in [self.pid, *descendants(self.pid)]:
            hwm = _status_kb(pid, "VmHWM")
            if hwm is not None:
                out[pid] = round(hwm / 1024, 1)
        return out

    def cpu_seconds(self) -> float:
        """User + system CPU seconds used so far by the child and its live descendants."""
        if not self.alive():
            return 0.0
        return sum(_cpu_seconds(pid) for pid in [self.pid, *descendants(self.pid)])

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the child's process group, SIGKILL it after `timeout`."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            _signal_group(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal_group(self.pid, signal.SIGKILL)
                self.proc.wait(5)
        _signal_group(self.pid, signal.SIGKILL)  # stragglers in the group (uvicorn workers)
        self.proc = None


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _cpu_seconds(pid: int) -> float:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rfind(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _status_kb(pid: int, field: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def descendants(pid: int) -> list[int]:
    """Pids of all descendants of `pid` (scanning /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rfind(")") + 2:].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def python(*args: str) -> list[str]:
    """argv for running this interpreter."""
    return [sys.executable, *args]


class BenchRedis:
    """A real redis-server (AOF on, `appendfsync everysec`, as deployed) for one run."""

    def __init__(self) -> None:
        self.server = RedisServer()
        self.client: redis.Redis | None = None

    @property
    def url(self) -> str:
        """redis:// URL."""
        return self.server.url

    def start(self) -> BenchRedis:
        """Start; AOF auto-rewrite is pushed to 4 GB so a rewrite fork never lands inside a timed window."""
        self.server.start()
        self.client = redis.Redis.from_url(self.url)
        self.client.config_set("auto-aof-rewrite-min-size", str(4 << 30))
        return self

    @property
    def r(self) -> redis.Redis:
        """A sync client."""
        assert self.client is not None
        return self.client

    def reset(self) -> None:
        """FLUSHALL, then rewrite the (now tiny) AOF so the next scenario starts from the same state."""
        self.r.flushall()
        self.r.bgrewriteaof()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            info = self.r.info("persistence")
            if not info.get("aof_rewrite_in_progress") and not info.get("aof_rewrite_scheduled"):
                return
            time.sleep(0.05)

    def used_memory(self) -> int:
        """INFO memory used_memory (bytes)."""
        return int(self.r.info("memory")["used_memory"])

    def version(self) -> str:
        """redis_version."""
        return str(self.r.info("server")["redis_version"])

    def stop(self) -> None:
        """Stop and delete the data directory."""
        if self.client is not None:
            self.client.close()
        self.server.cleanup()


__all__ = ["ROOT", "BenchRedis", "Proc", "descendants", "free_port", "python"]
