"""The README is a path a newcomer follows: every config block in it and in docs/ passes `check-config`, and the
commands it shows are run here as written (ports moved to free ones), with the answers it promises."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from postrelay import cli
from tests.cli.conftest import Running, check_output, clean_env, postrelay
from tests.support.processes import ROOT, wait_for
from tests.support.redis_server import free_port

README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
FENCE = re.compile(r"^( *)```(\w*)\n(.*?)^\1```", re.MULTILINE | re.DOTALL)
ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-[^}]*)?\}")


def blocks(path: Path, lang: str) -> list[str]:
    """The fenced blocks of one language in a Markdown file (indented ones too), dedented."""
    out = []
    for m in FENCE.finditer(path.read_text(encoding="utf-8")):
        if m.group(2) == lang:
            indent = len(m.group(1))
            out.append("\n".join(line[indent:] for line in m.group(3).splitlines()) + "\n")
    return out


def dummy(name: str) -> str:
    """A value of the right shape for a `${VAR}` a documentation block refers to."""
    if name.endswith("REDIS_URL"):
        return "redis://127.0.0.1:6379/0"
    if name.endswith("_URL"):
        return "https://hooks.example.com/x"
    return "whsec_ZG9jcy1leGFtcGxlLXNlY3JldC0wMTIzNDU2Nzg5"  # a Standard Webhooks key is also a fine token


CONFIG_BLOCKS = [(path, i, text) for path in [README, *DOCS] for i, text in enumerate(blocks(path, "toml"))]


def test_the_readme_and_the_docs_have_config_blocks() -> None:
    assert len([b for b in CONFIG_BLOCKS if b[0] == README]) >= 1
    assert len(CONFIG_BLOCKS) >= 5


@pytest.mark.parametrize(("path", "index", "text"), CONFIG_BLOCKS,
                         ids=[f"{p.relative_to(ROOT)}#{i}" for p, i, _ in CONFIG_BLOCKS])
def test_every_config_block_passes_check_config(tmp_path: Path, path: Path, index: int, text: str) -> None:
    cfg = tmp_path / "block.toml"
    cfg.write_text(text, encoding="utf-8")
    env = clean_env(**{name: dummy(name) for name in ENV_REF.findall(text)})
    result = postrelay("check-config", str(cfg), env=env)
    assert result.code == 0, f"{path.relative_to(ROOT)} config block {index}:\n{result.err}"
    assert result.out.startswith("ok: ")


def test_the_readme_links_stay_in_the_repository() -> None:
    text = README.read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)]+)\)", text):
        assert not re.match(r"[a-z]+://", target), target
        assert (ROOT / target).exists(), target
    assert "../" not in text


# --- the commands table ---------------------------------------------------------------------------------------

def table_commands() -> list[tuple[list[str], set[str]]]:
    """(`postrelay` subcommand path, flags shown) for each command in the README's commands table."""
    section = README.read_text(encoding="utf-8").split("## Commands", 1)[1].split("\n## ", 1)[0]
    out = []
    for row in re.findall(r"^\| (`postrelay .*?) \| .* \|$", section, re.MULTILINE):
        for shown in re.findall(r"`([^`]+)`", row):
            words = shown.removeprefix("postrelay ").split()
            path = [w for w in words[:2] if re.fullmatch(r"[a-z-]+", w)]
            out.append((path, set(re.findall(r"--[a-z-]+", shown))))
    return out


def test_every_command_in_the_table_exists_with_the_flags_shown(capsys: pytest.CaptureFixture[str]) -> None:
    rows = table_commands()
    assert len(rows) >= 12
    for path, flags in rows:
        assert cli.main([*path, "--help"]) == 0, path
        usage = capsys.readouterr().out
        for flag in flags:
            assert flag in usage, (path, flag)


# --- the shell blocks, run as written ---------------------------------------------------------------------------

SH = blocks(README, "sh")


def workdir(tmp_path: Path, sink_port: int) -> Path:
    """A directory laid out like the clone the README talks about: examples/ and .venv (this one)."""
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    relay = tmp_path / "examples" / "first-relay.toml"
    relay.write_text(relay.read_text(encoding="utf-8").replace("127.0.0.1:9000", f"127.0.0.1:{sink_port}"))
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))
    return tmp_path


def make_run(line: str, port: int, cwd: Path, running: list[Running]) -> Running:
    """`make run ...` as written: the command make would run (from the Makefile), with PORT= added."""
    args = [*line.split("#")[0].split()[2:], f"PORT={port}"]
    dry = subprocess.run(["make", "-s", "-n", "--no-print-directory", "-C", str(ROOT), "run", *args],
                         capture_output=True, text=True, check=True, env=clean_env())
    command = next(c for c in dry.stdout.splitlines() if "postrelay run" in c).split()
    assert command[:2] == [".venv/bin/postrelay", "run"] and command[-2:] == ["--port", str(port)], command
    proc = Running(command[1:], cwd)
    running.append(proc)
    assert proc.wait_for_output("receiving on", 60), proc.output()
    assert proc.wait_for_output("worker started", 60), proc.output()
    return proc


def run_block(text: str, cwd: Path, ports: dict[int, int]) -> str:
    """A block as a bash script (ports moved); checks every `# → ...` answer it promises, in order."""
    for old, new in ports.items():
        text = text.replace(f"127.0.0.1:{old}", f"127.0.0.1:{new}")
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", text], cwd=cwd, capture_output=True, text=True,
                          timeout=60, env=clean_env())
    check_output(proc.stdout + proc.stderr, secrets=["dev-sink-secret"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    position = 0
    for expected in re.findall(r"# → (.+)", text):
        expected = expected.split("   (")[0].rstrip(" ,…")
        found = proc.stdout.find(expected, position)
        assert found >= 0, (expected, proc.stdout)
        position = found + len(expected)
    return proc.stdout


def test_quick_start_as_written(tmp_path: Path, running: list[Running]) -> None:
    make_lines = SH[0].splitlines()
    assert make_lines[0].startswith("make run ") and make_lines[1].startswith("make test ")
    port = free_port()
    cwd = workdir(tmp_path, free_port())
    proc = make_run(make_lines[0], port, cwd, running)
    assert "/webhooks/postgrid" in SH[1]
    send, query = SH[1].split("curl -sS http://127.0.0.1:8000/v1/mailpieces")
    query = "curl -sS http://127.0.0.1:8000/v1/mailpieces" + query
    run_block(send, cwd, {8000: port})

    def piece_shown() -> bool:  # the worker applies the event asynchronously: ms quiet, more on a loaded machine
        try:
            run_block(query, cwd, {8000: port})
        except AssertionError:
            return False
        return True

    assert wait_for(piece_shown, 30, 0.1), run_block(query.split("# →")[0], cwd, {8000: port})
    again = run_block(send.replace("# → {\"accepted\":1", "# (again)"), cwd, {8000: port})
    assert '{"accepted":0,"duplicates":1,"ignored":0}' in again  # what the README says a second send answers
    # `make test` is what CI runs: its recipe runs ruff and pytest (not re-run from inside the suite)
    dry = subprocess.run(["make", "-s", "-n", "--no-print-directory", "-C", str(ROOT), "test"], capture_output=True,
                         text=True, check=True)
    assert ".venv/bin/ruff check ." in dry.stdout and ".venv/bin/python -m pytest -q" in dry.stdout
    assert proc.stop(signal.SIGTERM) == 0
    check_output(proc.output())


def test_first_relay_to_a_local_webhook_as_written(tmp_path: Path, running: list[Running]) -> None:
    sink_block, run_line, sender = SH[2], SH[3], SH[4]
    sink_port, port = free_port(), free_port()
    cwd = workdir(tmp_path, sink_port)
    sink_cmd = sink_block.split("#")[0].split()
    assert sink_cmd == ["python3", "examples/webhook_sink.py", "9000"]
    log = cwd / "sink.log"
    with open(log, "wb") as out_file:
        sink = subprocess.Popen([sys.executable, sink_cmd[1], str(sink_port)], cwd=cwd, stdout=out_file,
                                env=clean_env(WEBHOOK_SECRET="whsec_ZGV2LXNpbmstc2VjcmV0LTAxMjM0NTY3ODk="))

    def sink_lines() -> list[str]:
        return log.read_text(encoding="utf-8").splitlines()

    try:
        assert wait_for(lambda: sink_lines(), 30)
        assert sink_lines()[0].startswith(f"webhook sink listening on http://127.0.0.1:{sink_port}/")
        proc = make_run(run_line.strip().splitlines()[0], port, cwd, running)
        out = run_block(sender, cwd, {8000: port})
        assert "postrelay status at " in out
        assert wait_for(lambda: len(sink_lines()) > 1, 60), proc.output()
        line = sink_lines()[1]
        assert line.startswith("received processed_for_delivery for postgrid/letter_relay (stage "
                               "processed_for_delivery, webhook-id mev_"), line
        assert line.rstrip().endswith(" signature ok"), line
        assert wait_for(lambda: '"msg": "event applied"' in proc.output(), 30)  # the worker's line per event
        # the troubleshooting section's commands, in the same set-up
        record = cwd / ".postrelay" / "embedded.json"
        assert record.exists()
        redis_cli = re.search(r"`(redis-cli -u .*?)`\.?\n", README.read_text(encoding="utf-8")).group(1)
        ping = subprocess.run(["bash", "-c", f"{redis_cli} ping"], cwd=cwd, capture_output=True, text=True)
        assert ping.stdout.strip() == "PONG", ping
        for command in (".venv/bin/postrelay followups list", ".venv/bin/postrelay destinations"):
            assert command in README.read_text(encoding="utf-8")
            result = subprocess.run(command.split(), cwd=cwd, capture_output=True, text=True, env=clean_env())
            check_output(result.stdout + result.stderr)
            assert result.returncode == 0, result
        assert proc.stop(signal.SIGTERM) == 0
    finally:
        sink.kill()
        sink.wait(10)


def test_the_example_sink_stops_on_ctrl_c_and_refuses_a_taken_port_in_one_line() -> None:
    sink_path = str(ROOT / "examples" / "webhook_sink.py")
    port = free_port()
    sink = subprocess.Popen([sys.executable, sink_path, str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=clean_env())
    try:
        assert wait_for(lambda: _answers(port), 30)
        taken = subprocess.run([sys.executable, sink_path, str(port)], capture_output=True, text=True, timeout=30,
                               env=clean_env())
        assert (taken.returncode, taken.stderr) == (1, f"webhook_sink: cannot listen on 127.0.0.1:{port}: Address "
                                                       "already in use\n")
        sink.send_signal(signal.SIGINT)  # what Ctrl-C sends: no KeyboardInterrupt traceback
        out, err = sink.communicate(timeout=30)
    finally:
        if sink.poll() is None:
            sink.kill()
    assert (sink.returncode, err) == (0, "")
    assert out.splitlines()[-1] == "webhook sink stopped"


def _answers(port: int) -> bool:
    import httpx

    try:
        return httpx.post(f"http://127.0.0.1:{port}/", content=b"{}", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
