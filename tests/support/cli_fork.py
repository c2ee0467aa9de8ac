"""`postrelay ARGS` run to completion in a fresh process, forked from one that has already imported the CLI.

`python -m postrelay.cli status` spends ~0.4 s of CPU importing before it does anything; the tests run the
one-shot commands ~70 times. A fork server (one per test process, single-threaded, started on first use)
imports `postrelay.cli` once; each call forks it: the child takes the call's working directory, environment,
stdin (/dev/null) and output files, runs `postrelay.cli.main(ARGS)` exactly as `python -m postrelay.cli`
does (`sys.exit(main())`, an escaping exception printed as a traceback, exit code 1), and exits with that
code. Every call is still its own process: nothing it sets (environment, logging, signal handlers, module
state) reaches the next one. Long-running commands (`run`, `serve`, `worker` under test) stay real
`subprocess.Popen` children (tests/cli/conftest.py `Running`).

Protocol on the server's stdin/stdout, one JSON object per line: request `{"args", "cwd", "env", "out",
"err"}`; answers `{"pid": N}` once forked, then `{"code": C}` (negative: killed by that signal).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent


def _child(request: dict[str, Any]) -> int:
    """In the forked child: become the requested process, run the CLI, return its exit code."""
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    for fd, path in ((1, request["out"]), (2, request["err"])):
        os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), fd)
    sys.argv = [str(ROOT / "postrelay" / "cli" / "__main__.py"), *request["args"]]
    from postrelay.cli import main

    try:
        code: object = main(list(request["args"]))
    except SystemExit as exc:
        code = exc.code
    except BaseException:  # what the interpreter does with an uncaught exception
        import traceback

        traceback.print_exc()
        code = 1
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    return code


def serve() -> None:
    """The fork server's loop (`python -m tests.support.cli_fork`)."""
    import postrelay.cli  # noqa: F401  (the import each child would otherwise repeat)

    out = sys.stdout
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            os._exit(_child(request))
        out.write(json.dumps({"pid": pid}) + "\n")
        out.flush()
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        out.write(json.dumps({"code": code}) + "\n")
        out.flush()


class ForkServer:
    """Client side: one server process per test process."""

    def __init__(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("POSTRELAY_")}
        self.proc: subprocess.Popen[bytes] = subprocess.Popen(
            [sys.executable, "-m", "tests.support.cli_fork"], cwd=ROOT, env=env, bufsize=0,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True)
        self.dir = Path(tempfile.mkdtemp(prefix="postrelay-cli-"))
        self._pending = b""  # answer bytes read but not parsed yet (the pid and code lines may arrive together)

    def _read(self, timeout: float) -> dict[str, Any]:
        """The server's next answer line; TimeoutError if none arrives within `timeout` seconds."""
        import select

        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._pending:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise TimeoutError
            data = os.read(fd, 65536)
            if not data:
                raise RuntimeError("the CLI fork server exited")
            self._pending += data
        line, _, self._pending = self._pending.partition(b"\n")
        return dict(json.loads(line))

    def run(self, args: Sequence[str], cwd: Path, env: dict[str, str], timeout: float) -> tuple[int, str, str]:
        """Run one command to completion: (exit code, stdout, stderr)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        out, err = self.dir / "out", self.dir / "err"
        self.proc.stdin.write((json.dumps({"args": list(args), "cwd": str(cwd), "env": env, "out": str(out),
                                           "err": str(err)}) + "\n").encode())
        self.proc.stdin.flush()
        pid = self._read(30)["pid"]
        try:
            code = int(self._read(timeout)["code"])
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            self._read(30)
            raise subprocess.TimeoutExpired(["postrelay", *args], timeout) from None
        return code, out.read_text(errors="replace"), err.read_text(errors="replace")

    def close(self) -> None:
        """Stop the server and remove its files."""
        with contextlib.suppress(Exception):
            if self.proc.stdin:
                self.proc.stdin.close()
            self.proc.wait(10)
        import shutil

        shutil.rmtree(self.dir, ignore_errors=True)


_server: ForkServer | None = None


def run_cli(args: Sequence[str], cwd: Path, env: dict[str, str], timeout: float) -> tuple[int, str, str]:
    """`postrelay ARGS` in a forked child of this test process's fork server (started on first use)."""
    global _server
    if _server is None or _server.proc.poll() is not None:
        _server = ForkServer()
        atexit.register(_server.close)
    try:
        return _server.run(args, cwd, env, timeout)
    except (TimeoutError, RuntimeError):  # the server itself is stuck or gone: the next call starts a new one
        _server.proc.kill()
        _server.close()
        _server = None
        raise


if __name__ == "__main__":
    serve()
