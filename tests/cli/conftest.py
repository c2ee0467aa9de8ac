"""The real `postrelay` command in a process of its own, as a newcomer or an operator types it.

Every call checks what any command must never print: a traceback, or a secret of the config it was given.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.cli_fork import run_cli
from tests.support.processes import ROOT, wait_for

DEV_CONFIG = ROOT / "examples" / "dev.toml"
# the development defaults of examples/dev.toml: no output may contain them
DEV_SECRETS = ("dev-api-token-change-me", "dev-postgrid-secret-0123456789", "dev-lob-secret-0123456789",
               "dev-postalytics-token-0123456789", "ZGV2LWdlbmVyaWMtc2VjcmV0LTAxMjM0NTY3ODk=")


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any POSTRELAY_* variable (a fresh shell), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSTRELAY_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        """stderr's lines."""
        return self.err.splitlines()


def check_output(text: str, secrets: Sequence[str] = ()) -> None:
    """No traceback and no secret in `text`."""
    assert "Traceback" not in text, text
    for secret in (*DEV_SECRETS, *secrets):
        assert secret not in text, f"secret {secret[:4]}… printed:\n{text}"


def postrelay(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 60,
              secrets: Sequence[str] = ()) -> Result:
    """Run `postrelay ARGS` to completion, in its own process (forked from one that imported the CLI already:
    tests/support/cli_fork.py)."""
    code, out, err = run_cli(args, cwd or ROOT, env or clean_env(), timeout)
    check_output(out + err, secrets)
    return Result(code, out, err)


def descendants(pid: int) -> set[int]:
    """Every live (non-zombie) process below `pid`, whatever session it moved to."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            if fields[0] != "Z":
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    out: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


def alive(pid: int) -> bool:
    """True while `pid` runs (a zombie does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2:].split()[0] != "Z"


class Running:
    """A long-running `postrelay ...` (run, serve, worker) with its output in a file."""

    def __init__(self, args: Sequence[str], cwd: Path, env: dict[str, str] | None = None) -> None:
        self.log_path = cwd / f"postrelay-{args[0]}.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "postrelay.cli", *args], cwd=cwd,
                                         env=env or clean_env(), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    def output(self) -> str:
        """What it printed so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_for_output(self, text: str, timeout: float = 60) -> bool:
        """Until `text` appears (False if it exits or the time is up first)."""
        return wait_for(lambda: text in self.output() or self.proc.poll() is not None, timeout) and \
            text in self.output()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        """Send `sig` and wait for the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def kill_all(self) -> None:
        """Test teardown: nothing of it survives (SIGKILL to it and everything below it)."""
        for pid in [*descendants(self.proc.pid), self.proc.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)


@pytest.fixture
def running() -> Iterator[list[Running]]:
    """Processes a test starts; killed (with their children) whatever happens."""
    started: list[Running] = []
    yield started
    for r in started:
        r.kill_all()
