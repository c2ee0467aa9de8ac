"""Real postrelay processes for fault tests: `postrelay serve` and `postrelay worker` as subprocesses.

Each process runs in its own session (process group), so `kill()` SIGKILLs it together with its children
(RQ's scheduler process) and nothing else. stdout/stderr go to a log file the tests can grep (secrets).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx

from tests.support.redis_server import free_port

ROOT = Path(__file__).resolve().parents[2]


def wait_for(predicate: Callable[[], object], timeout: float, interval: float = 0.05) -> bool:
    """Poll `predicate` until it is truthy or `timeout` seconds pass; returns whether it became truthy."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)



def group_threads(pgid: int) -> list[str]:
    """The scheduler state letter of every thread of every process in process group `pgid`."""
    states: list[str] = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            if int(stat[stat.rindex(")") + 2:].split()[2]) != pgid:
                continue
            for task in (proc / "task").iterdir():
                task_stat = (task / "stat").read_text()
                states.append(task_stat[task_stat.rindex(")") + 2])
        except (OSError, ValueError):  # exited while we looked
            continue
    return states


def stop_group(pgid: int, timeout: float = 10.0) -> None:
    """SIGSTOP a process group and return only once every one of its threads is stopped.

    `kill(SIGSTOP)` returns before that: the kernel wakes one thread to take the group stop, and until it has
    run, another thread blocked in `recv` can still wake on data that arrives and act on it."""
    os.killpg(pgid, signal.SIGSTOP)
    if not wait_for(lambda: all(s in "tTZX" for s in group_threads(pgid) or "?"), timeout, 0.001):
        raise AssertionError(f"process group {pgid} not stopped after {timeout} s: {group_threads(pgid)}")

# --- a minimal TOML writer for config files ------------------------------------------------------------------


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON string escapes are valid TOML basic-string escapes
    if isinstance(value, list):
        return "[" + ", ".join(_scalar(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_scalar(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def to_toml(data: Mapping[str, Any], prefix: str = "") -> str:
    """TOML text for nested dicts of scalars, lists, tables and arrays of tables (enough for postrelay configs)."""
    lines = [f"{json.dumps(k)} = {_scalar(v)}" for k, v in data.items()
             if not isinstance(v, dict) and not _is_table_array(v)]
    out = "\n".join(lines) + ("\n" if lines else "")
    for key, value in data.items():
        name = f"{prefix}.{json.dumps(key)}" if prefix else json.dumps(key)
        if isinstance(value, dict):
            out += f"\n[{name}]\n" + to_toml(value, name)
        elif _is_table_array(value):
            for item in value:
                out += f"\n[[{name}]]\n" + to_toml(item, name)
    return out


def write_config(path: Path, data: Mapping[str, Any]) -> Path:
    """Write `data` as a postrelay TOML config file."""
    path.write_text(to_toml(data), encoding="utf-8")
    return path


# --- processes --------------------------------------------------------------------------------------------------


class _Process:
    """A `python -m postrelay.cli ...` child in its own process group, logging to `log_path`."""

    def __init__(self, args: list[str], log_path: Path, env: Mapping[str, str] | None = None) -> None:
        self.args = args
        self.log_path = log_path
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def _spawn(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 (handed to the child; closed below)
        try:
            self.proc = subprocess.Popen([sys.executable, "-m", "postrelay.cli", *self.args], cwd=ROOT, env=self.env,
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        finally:
            log.close()
        self.starts += 1

    @property
    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The process id (also its process group id)."""
        return self.proc.pid if self.proc else None

    def kill(self) -> None:
        """SIGKILL the whole process group and reap the process."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None

    def terminate(self, timeout: float = 15.0) -> int | None:
        """SIGTERM (graceful stop); SIGKILL if it has not exited within `timeout`. Returns the exit code."""
        if self.proc is None:
            return None
        proc = self.proc
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # leftovers in the group, if any
        self.proc = None
        return code

    def log(self) -> str:
        """Everything the process (all its incarnations) wrote so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""


class ReceiverProcess(_Process):
    """`postrelay serve --config F --port P` on 127.0.0.1; the port stays the same across restarts."""

    def __init__(self, config: Path, log_path: Path, port: int | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        self.port = port or free_port()
        super().__init__(["serve", "--config", str(config), "--host", "127.0.0.1", "--port", str(self.port)],
                         log_path, env)

    @property
    def url(self) -> str:
        """Base URL."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> ReceiverProcess:
        """Start and wait until GET /healthz answers 200."""
        self._spawn()

        def up() -> bool:
            if not self.alive:
                raise RuntimeError(f"receiver exited: {self.log()[-2000:]}")
            try:
                return httpx.get(f"{self.url}/healthz", timeout=0.5).status_code == 200
            except httpx.HTTPError:
                return False

        if not wait_for(up, timeout, 0.05):
            raise RuntimeError(f"receiver did not answer /healthz within {timeout} s: {self.log()[-2000:]}")
        return self


class WorkerProcess(_Process):
    """`postrelay worker --config F` (one process: dispatcher, due-time loop, executor threads; no child)."""

    def __init__(self, config: Path, log_path: Path, env: Mapping[str, str] | None = None) -> None:
        super().__init__(["worker", "--config", str(config)], log_path,
                         {"POSTRELAY_CLAIM_IDLE": "2", **(env or {})})

    def start(self) -> WorkerProcess:
        """Start (it connects to Redis and begins consuming on its own)."""
        self._spawn()
        return self
