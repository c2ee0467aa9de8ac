"""`postrelay run` / `serve` / `worker` as processes: they refuse a config that cannot work before listening,
say what they do, find each other through `.postrelay/`, and stop completely."""

from __future__ import annotations

import os
import re
import signal
import socket
import time
from pathlib import Path

import httpx
import pytest
import redis

from postrelay.core import keys
from tests.cli.conftest import DEV_CONFIG, Running, alive, check_output, clean_env, descendants, postrelay
from tests.support.processes import wait_for
from tests.support.redis_server import RedisServer, free_port

BAD_TOKEN = "pat-na1 with-a-space-9f8e7d6c5b4a"
BAD_DEST = f'[destinations.hs]\ntype = "hubspot"\ntoken = "{BAD_TOKEN}"\n\n[[routes]]\nto = ["hs"]\n'


def bad_config(tmp_path: Path, redis_url: str | None = None) -> Path:
    """A config whose one destination `check-config` rejects: examples/dev.toml's (embedded Redis) or a Redis."""
    base = f'[server]\nredis_url = "{redis_url}"\n' if redis_url else DEV_CONFIG.read_text(encoding="utf-8")
    path = tmp_path / "bad.toml"
    path.write_text(base + "\n" + BAD_DEST, encoding="utf-8")
    return path


def refused(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.parametrize("command", ["run", "serve", "worker"])
def test_a_config_that_cannot_work_stops_the_start_within_seconds(tmp_path: Path, redis_url: str, command: str) -> None:
    cfg = bad_config(tmp_path, None if command == "run" else redis_url)
    port = free_port()
    args = [command, "--config", str(cfg)] + (["--port", str(port)] if command != "worker" else [])
    started = time.monotonic()
    result = postrelay(*args, cwd=tmp_path, timeout=30, secrets=[BAD_TOKEN])
    assert time.monotonic() - started < 20
    assert result.code == 2
    assert result.lines == [f"config error: {cfg}: destinations.hs.token: must be printable ASCII without spaces"]
    assert "receiving" not in result.err
    assert refused(port)  # nothing answers (let alone 200) on the port it would have used
    assert not (tmp_path / ".postrelay").exists()  # no embedded Redis was started


def test_check_config_prints_the_same_lines_as_run(tmp_path: Path) -> None:
    cfg = bad_config(tmp_path)
    check = postrelay("check-config", str(cfg), cwd=tmp_path, secrets=[BAD_TOKEN])
    run = postrelay("run", "--config", str(cfg), "--port", str(free_port()), cwd=tmp_path, secrets=[BAD_TOKEN])
    assert check.code == run.code == 2
    assert check.lines == run.lines


def start_run(tmp_path: Path, running: list[Running], *extra: str) -> tuple[Running, int]:
    port = free_port()
    proc = Running(["run", "--config", str(DEV_CONFIG), "--port", str(port), *extra], tmp_path)
    running.append(proc)
    assert proc.wait_for_output("receiving on", 60), proc.output()
    assert proc.wait_for_output("worker started", 60), proc.output()  # its one start line
    return proc, port


def test_operator_commands_find_the_embedded_redis_with_no_flags(tmp_path: Path, running: list[Running]) -> None:
    proc, port = start_run(tmp_path, running)
    out = proc.output()
    assert f"postrelay: receiving on http://127.0.0.1:{port} (worker pid " in out
    assert re.search(r"postrelay: embedded Redis at redis://127\.0\.0\.1:\d+/0 \(data in .*/\.postrelay/redis; "
                     r"address recorded in .*/\.postrelay/embedded\.json\)", out), out
    assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200
    for args in (["status"], ["dlq", "list"], ["followups", "list"], ["destinations"],
                 ["status", "--config", str(DEV_CONFIG)], ["status", "--json"]):
        result = postrelay(*args, cwd=tmp_path)
        assert result.code == 0, (args, result)
        assert result.err == ""
    assert "dead-letter store is empty" in postrelay("dlq", "list", cwd=tmp_path).out
    assert "no pending follow-ups" in postrelay("followups", "list", cwd=tmp_path).out
    # the worker says it started (Redis, destinations, rules)
    assert wait_for(lambda: "worker started: redis redis://127.0.0.1:" in proc.output(), 30), proc.output()
    assert "0 destination(s): none; 0 route(s), 0 follow-up rule(s)" in proc.output()
    assert wait_for(lambda: " 1 alive" in postrelay("status", cwd=tmp_path).out, 30)
    check_output(proc.output())


def test_sigterm_stops_everything_run_started_and_says_so(tmp_path: Path, running: list[Running]) -> None:
    proc, port = start_run(tmp_path, running)
    children = descendants(proc.proc.pid)
    assert len(children) >= 2  # the embedded redis-server and the worker (and RQ's scheduler below it)
    record = tmp_path / ".postrelay" / "embedded.json"
    assert record.exists()
    assert proc.stop(signal.SIGTERM, timeout=60) == 0
    assert wait_for(lambda: not any(alive(pid) for pid in children), 30), [p for p in children if alive(p)]
    out = proc.output()
    assert re.search(r"postrelay: stopped on SIGTERM: the receiver, the worker \(pid \d+, exited cleanly\), the embedded "
                     r"Redis \(redis://127\.0\.0\.1:\d+/0; its data stays in .*\.postrelay/redis\)", out), out
    assert not record.exists()
    assert refused(port)
    check_output(out)
    # a cleanly stopped worker is neither alive nor stale: status (against the same data) shows no worker
    after = postrelay("status", "--config", str(DEV_CONFIG), cwd=tmp_path)
    assert after.code == 3  # the embedded Redis is gone too, and the command says what it tried
    assert after.lines == [f"postrelay: no Redis to reach: {DEV_CONFIG} sets no [server] redis_url, "
                           f"$POSTRELAY_REDIS_URL is not set, and no embedded Redis is recorded in {record} "
                           f"(is `postrelay run` running here?)"]


def test_sigint_stops_everything_too(tmp_path: Path, running: list[Running]) -> None:
    proc, _ = start_run(tmp_path, running)
    children = descendants(proc.proc.pid)
    assert proc.stop(signal.SIGINT, timeout=60) == 130
    assert wait_for(lambda: not any(alive(pid) for pid in children), 30)
    assert "postrelay: stopped on SIGINT: the receiver, the worker" in proc.output()


def test_run_exits_non_zero_and_stops_the_rest_when_its_worker_dies(tmp_path: Path, running: list[Running]) -> None:
    proc, port = start_run(tmp_path, running)
    worker_pid = int(re.search(r"worker pid (\d+)", proc.output()).group(1))
    children = descendants(proc.proc.pid)
    os.kill(worker_pid, signal.SIGKILL)  # from outside, as the OOM killer would
    assert proc.proc.wait(60) == 1
    assert "postrelay: the worker stopped (ended by SIGKILL); stopping the receiver and the rest" in proc.output()
    assert wait_for(lambda: not any(alive(pid) for pid in children), 30)
    assert refused(port)


def test_a_taken_port_is_one_line_with_its_own_exit_code(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = postrelay("run", "--config", str(DEV_CONFIG), "--port", str(port), cwd=tmp_path)
    assert result.code == 4
    assert result.lines == [f"postrelay: cannot listen on 127.0.0.1:{port}: the port is already in use (another "
                            f"postrelay?); choose another with --port (make run PORT=...) or [server] port"]
    assert not (tmp_path / ".postrelay" / "embedded.json").exists()


def test_serve_refuses_a_taken_port_too(tmp_path: Path, redis_url: str) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[server]\nredis_url = "{redis_url}"\n', encoding="utf-8")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        for workers in ("1", "2"):
            result = postrelay("serve", "--config", str(cfg), "--port", str(port), "--workers", workers, cwd=tmp_path)
            assert result.code == 4
            assert result.lines[0].startswith(f"postrelay: cannot listen on 127.0.0.1:{port}: the port is already")


def test_unreachable_redis_is_one_line_naming_what_was_tried(tmp_path: Path) -> None:
    port = free_port()
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[server]\nredis_url = "redis://:pw-secret-123456@127.0.0.1:{port}/0"\n', encoding="utf-8")
    for args in (["status"], ["dlq", "list"], ["dlq", "replay"], ["followups", "list"], ["followups", "cancel", "a|b|c"],
                 ["destinations"], ["worker"]):
        result = postrelay(*args, "--config", str(cfg), cwd=tmp_path, secrets=["pw-secret-123456"])
        assert result.code == 3, (args, result)
        assert len(result.lines) == 1, result.err
        assert result.lines[0].startswith(f"postrelay: cannot reach Redis at redis://:***@127.0.0.1:{port}/0 (from "
                                          f"[server] redis_url in {cfg}): "), result.err


def test_a_stale_record_names_the_embedded_redis_it_tried(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / ".postrelay").mkdir()
    record = tmp_path / ".postrelay" / "embedded.json"
    record.write_text(f'{{"redis_url": "redis://127.0.0.1:{port}/0", "config": "{DEV_CONFIG}", "pid": 1}}')
    result = postrelay("status", cwd=tmp_path)
    assert result.code == 3
    assert result.lines[0].startswith(f"postrelay: cannot reach Redis at redis://127.0.0.1:{port}/0 (the embedded "
                                      f"Redis recorded in {record}): ")


def test_worker_stopped_cleanly_leaves_no_heartbeat(tmp_path: Path, redis_url: str, running: list[Running]) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[server]\nredis_url = "{redis_url}"\n', encoding="utf-8")
    worker = Running(["worker", "--config", str(cfg)], tmp_path)
    running.append(worker)
    assert worker.wait_for_output("worker started", 60), worker.output()
    assert wait_for(lambda: " 1 alive" in postrelay("status", "--config", str(cfg)).out, 30)
    assert worker.stop(signal.SIGTERM) == 0
    status = postrelay("status", "--config", str(cfg))
    assert "workers            0 alive (no worker ever registered a heartbeat)" in status.out
    assert redis.Redis.from_url(redis_url).hlen(keys.WORKER_HEARTBEATS) == 0
    check_output(worker.output())


def test_unknown_command_and_bad_flag_are_usage_errors() -> None:
    for args in (["frobnicate"], ["status", "--nope"], ["dlq"], ["dlq", "list", "--since", "last tuesday"]):
        result = postrelay(*args, env=clean_env())
        assert result.code == 2, (args, result)



def test_a_since_too_far_back_is_a_usage_error_naming_it() -> None:
    result = postrelay("dlq", "list", "--since", "9999999999999d", env=clean_env())
    assert result.code == 2, result
    assert result.lines[-1] == ("Error: Invalid value for '--since': '9999999999999d' is too far in the past; "
                                "use an ISO date/time or a shorter duration")


def test_operator_commands_reach_a_redis_on_a_unix_socket(tmp_path: Path) -> None:
    server = RedisServer(unixsocket=True).start()
    try:
        cfg = tmp_path / "unix.toml"
        cfg.write_text(f'[server]\nredis_url = "unix://{server.unixsocket}"\n', encoding="utf-8")
        status = postrelay("status", "--config", str(cfg))
        assert status.code == 0, status
        assert f"(redis unix://{server.unixsocket})" in status.out
        assert postrelay("dlq", "list", "--config", str(cfg)).out == "dead-letter store is empty\n"
    finally:
        server.cleanup()


@pytest.mark.parametrize(("args", "line"), [
    (["serve", "--port", "99999"], "Error: Invalid value for '--port': 99999 is not in the range 0<=x<=65535."),
    (["run", "--port", "-1"], "Error: Invalid value for '--port': -1 is not in the range 0<=x<=65535."),
    (["serve", "--workers", "0"], "Error: Invalid value for '--workers': 0 is not in the range x>=1."),
    (["dlq", "list", "--limit", "0"], "Error: Invalid value for '--limit': 0 is not in the range x>=1."),
])
def test_out_of_range_numbers_are_usage_errors(args: list[str], line: str) -> None:
    """Not 'unexpected OverflowError' (exit 1), nor silently one process / one entry / every entry."""
    result = postrelay(*args, env=clean_env())
    assert (result.code, result.lines[-1]) == (2, line), result


def test_dlq_list_shows_the_newest_first_and_limit_keeps_the_newest(tmp_path: Path, redis_url: str) -> None:
    from postrelay.core.stores import dlq

    client = redis.Redis.from_url(redis_url)
    for i, when in enumerate([1_700_000_000, 1_700_000_300, 1_700_000_100]):
        dlq.add(client, f"crm|mev_{i}|0", {}, f"reason {i}", [], when)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[server]\nredis_url = "{redis_url}"\n', encoding="utf-8")
    result = postrelay("dlq", "list", "--config", str(cfg), "--limit", "2")
    assert result.code == 0, result
    assert [line.split()[2] for line in result.out.splitlines()] == ["mev_1", "mev_2"]


def test_destinations_without_any_and_an_unknown_name_say_so(tmp_path: Path, redis_url: str) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[server]\nredis_url = "{redis_url}"\n', encoding="utf-8")
    listed = postrelay("destinations", "--config", str(cfg))
    assert (listed.code, listed.out) == (0, "no destinations configured (one [destinations.NAME] table each: "
                                            "docs/adapters.md)\n")
    cfg.write_text(cfg.read_text() + '[destinations.crm]\ntype = "webhook"\nurl = "https://hooks.example.com/x"\n')
    paused = postrelay("destinations", "pause", "crn", "--config", str(cfg))
    assert (paused.code, paused.lines) == (2, ["unknown destination 'crn'; known: crm"])


def test_a_data_dir_that_cannot_be_made_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("", encoding="utf-8")
    data_dir = tmp_path / "a-file" / "data"  # under a regular file: even root cannot make it
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[server]\ndata_dir = "{data_dir}"\n', encoding="utf-8")
    port = free_port()
    result = postrelay("run", "--config", str(cfg), "--port", str(port), cwd=tmp_path)
    assert (result.code, result.lines) == (1, [f"postrelay: cannot keep the embedded Redis's data in {data_dir}/redis "
                                               f"([server] data_dir = '{data_dir}'): Not a directory"])
    assert refused(port)


def test_serve_says_where_it_receives(tmp_path: Path, redis_url: str, running: list[Running]) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[server]\nredis_url = "{redis_url}"\nlog_format = "text"\n', encoding="utf-8")
    port = free_port()
    serve = Running(["serve", "--config", str(cfg), "--port", str(port)], tmp_path)
    running.append(serve)
    assert serve.wait_for_output(f"postrelay.serve: receiving on http://127.0.0.1:{port} (1 process(es)); stop with "
                                 "Ctrl-C or SIGTERM", 60), serve.output()
    assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
    serve.stop(signal.SIGTERM)  # uvicorn exits by the signal it stopped on (-15), after its graceful shutdown
    check_output(serve.output())


@pytest.mark.parametrize("command", [["status"], ["dlq", "list"], ["destinations"], ["worker"]])
def test_a_redis_that_never_answers_is_exit_3_not_a_hang(tmp_path: Path, command: list[str]) -> None:
    with socket.socket() as hole:  # accepts connections (the kernel's backlog) and never says a word
        hole.bind(("127.0.0.1", 0))
        hole.listen(16)
        url = f"redis://127.0.0.1:{hole.getsockname()[1]}/0"
        cfg = tmp_path / "c.toml"
        cfg.write_text(f'[server]\nredis_url = "{url}"\n', encoding="utf-8")
        started = time.monotonic()
        result = postrelay(*command, "--config", str(cfg), timeout=40)
    assert time.monotonic() - started < 30
    assert (result.code, result.lines) == (3, [f"postrelay: cannot reach Redis at {url} (from [server] redis_url in "
                                               f"{cfg}): Timeout reading from socket"])


def test_log_settings_from_the_environment_are_checked_in_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[server]\nredis_url = "redis://127.0.0.1:1/0"\n', encoding="utf-8")
    debug = postrelay("check-config", str(cfg), env=clean_env(POSTRELAY_LOG_LEVEL="debug"))  # any case
    assert debug.code == 0, debug
    bogus = postrelay("check-config", str(cfg), env=clean_env(POSTRELAY_LOG_LEVEL="bogus"))
    assert (bogus.code, bogus.lines) == (2, ["config error: $POSTRELAY_LOG_LEVEL: expected DEBUG, INFO, WARNING, "
                                             "ERROR or CRITICAL, not 'bogus'"])
    xml = postrelay("worker", "--config", str(cfg), env=clean_env(POSTRELAY_LOG_FORMAT="xml"))
    assert (xml.code, xml.lines) == (2, ["config error: $POSTRELAY_LOG_FORMAT: expected 'json' or 'text', not 'xml'"])
    idle = postrelay("worker", "--config", str(cfg), env=clean_env(POSTRELAY_CLAIM_IDLE="abc"))
    assert (idle.code, idle.lines) == (2, ["config error: $POSTRELAY_CLAIM_IDLE: cannot parse duration 'abc'; expected "
                                           "a duration such as '30s', '5m', '36h', '8d' or '14 days' (a bare number "
                                           "is seconds)"])

def test_run_stops_the_rest_when_its_embedded_redis_dies(tmp_path: Path, running: list[Running]) -> None:
    proc, port = start_run(tmp_path, running)
    children = descendants(proc.proc.pid)
    redis_pid = next(pid for pid in children if "redis-server" in Path(f"/proc/{pid}/cmdline").read_text())
    os.kill(redis_pid, signal.SIGKILL)
    assert proc.proc.wait(60) == 1
    assert "postrelay: the embedded Redis stopped (ended by SIGKILL); stopping the receiver and the rest" in proc.output()
    assert wait_for(lambda: not any(alive(pid) for pid in children), 30)
    assert refused(port)
    check_output(proc.output())


def test_a_second_run_on_the_same_data_dir_is_refused(tmp_path: Path, running: list[Running]) -> None:
    first, _ = start_run(tmp_path, running)
    port = free_port()
    result = postrelay("run", "--config", str(DEV_CONFIG), "--port", str(port), cwd=tmp_path)
    assert result.code == 1
    assert result.lines == [f"postrelay: another `postrelay run` (pid {first.proc.pid}) uses the embedded Redis in "
                            f"{tmp_path / '.postrelay'}: stop it first, or set another [server] data_dir"]
    assert refused(port)
    assert postrelay("status", cwd=tmp_path).code == 0  # the first one is untouched
