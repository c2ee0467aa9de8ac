"""`postrelay run`'s parts and their lifetimes: the embedded Redis, the worker process and the receiver.

The worker and the embedded Redis run in their own sessions, so a Ctrl-C at the terminal reaches only `run`,
which then stops them in order: the receiver first (no new webhooks), the worker (it finishes or hands back
what it holds), the Redis last (it flushes its AOF). A part that dies on its own stops the others too.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

from postrelay.cli.common import FAILED
from postrelay.core import embedded
from postrelay.core.config import CONFIG_ENV, REDIS_URL_ENV, Config

WORKER_STOP_TIMEOUT = 20.0


class RunError(Exception):
    """`run` cannot start (no redis-server, another `run` on the same data dir): one line, exit 1."""

    exit_code = FAILED


def say(message: str) -> None:
    """A `postrelay: ...` line on stderr."""
    print(f"postrelay: {message}", file=sys.stderr, flush=True)


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _how(code: int | None) -> str:
    """`exited cleanly`, `exit code 3`, `ended by SIGKILL`."""
    if code == 0:
        return "exited cleanly"
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            return f"ended by {signal.Signals(-code).name}"
    return f"exit code {code}"


class Supervisor:
    """Starts the parts of `run`, watches them, and stops them all (see the module docstring)."""

    class Stopped(Exception):
        """SIGTERM/SIGINT arrived while the parts were starting."""

    def __init__(self, config: Config, config_path: str | None, log_format: str | None) -> None:
        self.config = config
        self.config_path = config_path
        self.log_format = log_format
        self.redis: embedded.EmbeddedRedis | None = None
        self.worker: subprocess.Popen[bytes] | None = None
        self.server: Any = None
        self.signal: int | None = None
        self.died: str | None = None
        self._starting = True
        self._done = threading.Event()

    @property
    def worker_pid(self) -> int | None:
        """The worker process's pid."""
        return self.worker.pid if self.worker else None

    @contextlib.contextmanager
    def signals(self) -> Iterator[None]:
        """SIGTERM and SIGINT stop `run` (uvicorn's own handlers take over while it serves)."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        if self.signal is None:
            self.signal = sig
        if self.server is not None:
            self.server.should_exit = True
        if self._starting:
            self._starting = False
            raise self.Stopped()

    def start_redis(self) -> None:
        """Start the embedded Redis when no redis_url is configured, and record its address."""
        if self.config.server.redis_url:
            return
        data_dir = self.config.server.data_dir
        record = embedded.read_record(data_dir)
        if record and _alive(record.get("pid")) and record.get("pid") != os.getpid():
            raise RunError(f"another `postrelay run` (pid {record['pid']}) uses the embedded Redis in "
                           f"{embedded.record_path(data_dir).parent}: stop it first, or set another [server] data_dir")
        self.redis = embedded.EmbeddedRedis(data_dir, self.config.server.appendfsync)
        try:
            self.redis.start()
        except RuntimeError as exc:
            raise RunError(str(exc)) from None
        except OSError as exc:  # its data directory cannot be made: nothing was started
            where, self.redis = self.redis.dir, None
            raise RunError(f"cannot keep the embedded Redis's data in {where} ([server] data_dir = {data_dir!r}): "
                           f"{exc.strerror or type(exc).__name__}") from None
        self.config.server.redis_url = self.redis.url
        where = embedded.write_record(data_dir, self.redis.url, self.config_path)
        say(f"embedded Redis at {self.redis.url} (data in {self.redis.dir}; address recorded in {where})")

    def start_worker(self) -> None:
        """Start `postrelay worker` against the same config and Redis."""
        env = dict(os.environ, **{REDIS_URL_ENV: self.config.server.redis_url or ""})
        if self.config_path:
            env[CONFIG_ENV] = self.config_path
        argv = [sys.executable, "-m", "postrelay.cli", "worker"]
        if self.log_format:
            argv += ["--log-format", self.log_format]
        self.worker = subprocess.Popen(argv, env=env, start_new_session=True)

    def serve(self, server: Any, sock: Any, banner: str) -> None:
        """Run the receiver on `sock` until a signal, or until another part dies; say `banner` once it serves."""
        self.server = server
        self._starting = False
        watcher = threading.Thread(target=self._watch, args=(banner,), name="run-watch", daemon=True)
        watcher.start()
        server.run(sockets=[sock])
        self._done.set()
        if self.signal is None and self.died is None and not server.should_exit:
            self.died = "the receiver"
        if self.died == "the receiver":
            say("the receiver stopped unexpectedly; stopping the rest")

    def _watch(self, banner: str) -> None:
        while not self._done.wait(0.05 if not self.server.started else 0.2):
            if self.server.should_exit:
                return
            if banner and self.server.started:
                say(banner)
                banner = ""
            redis_proc = self.redis.proc if self.redis is not None else None
            for name, proc in (("the worker", self.worker), ("the embedded Redis", redis_proc)):
                if proc is not None and proc.poll() is not None:
                    self.died = name
                    say(f"{name} stopped ({_how(proc.returncode)}); stopping the receiver and the rest")
                    self.server.should_exit = True
                    return

    def stop(self) -> None:
        """Stop whatever was started, in order, and say what was stopped."""
        self._starting = False
        self._done.set()
        stopped = ["the receiver"] if self.server is not None else []
        if self.worker is not None:
            stopped.append(f"the worker (pid {self.worker.pid}, {_how(self._stop_worker(self.worker))})")
        if self.redis is not None:
            url, where = self.redis.url, self.redis.dir
            self.redis.stop()
            embedded.remove_record(self.config.server.data_dir)
            stopped.append(f"the embedded Redis ({url}; its data stays in {where})")
        if stopped:
            how = {int(signal.SIGTERM): " on SIGTERM", int(signal.SIGINT): " on SIGINT"}.get(self.signal or 0, "")
            say(f"stopped{how}: " + ", ".join(stopped))

    @staticmethod
    def _stop_worker(proc: subprocess.Popen[bytes]) -> int | None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                proc.wait(WORKER_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # anything it left in its session (RQ's scheduler)
        return proc.returncode
