"""Issue 18's worker faults, against a real redis-server and real `postrelay worker` processes:

- delayed work (retries) is run on time through a Redis restart (AOF) and a worker restart within seconds;
- a worker has no child process, so a SIGKILLed one leaves nothing running;
- a 2xx received while Redis is full (`noeviction` at `maxmemory`) is stored once memory returns, never sent
  again, and the worker backs off instead of spinning while Redis refuses writes;
- the window between a destination's 2xx and the done marker is measured, and duplicates after SIGKILLs
  that land anywhere are counted from what the destination received.

Events are put on the ingest stream the way the receiver's script does (the receiver is not under test here).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import statistics
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from postrelay.core import keys
from postrelay.core.scripts import lua
from tests.faults.conftest import Report, emit, soak
from tests.support.processes import WorkerProcess, wait_for, write_config
from tests.support.redis_server import RedisServer
from tests.support.sink import Behaviour, RecordingSink
from tests.workers.conftest import event


@dataclass
class Bench:
    """A Redis, one recording destination, a config and worker processes."""

    tmp: Path
    server: RedisServer
    sink: RecordingSink
    config: Path
    workers: list[WorkerProcess] = field(default_factory=list)

    @property
    def redis(self) -> redis.Redis:
        return redis.Redis(port=self.server.port, socket_timeout=5)

    def start_workers(self, n: int = 1) -> None:
        """Start `n` workers and wait until each has written its heartbeat."""
        before = self.redis.hlen(keys.WORKER_HEARTBEATS)
        for i in range(n):
            self.workers.append(WorkerProcess(self.config, self.tmp / f"worker{i}.log").start())
        assert wait_for(lambda: self.redis.hlen(keys.WORKER_HEARTBEATS) >= before + n, 30), self.logs()[-2000:]

    def push(self, n: int, tag: str) -> list[str]:
        """`n` events on distinct pieces; returns their canonical ids."""
        r = self.redis
        ids = []
        pipe = r.pipeline()
        for i in range(n):
            e = event("mailed", piece=f"{tag}_{i}")
            pipe.xadd(keys.INGEST_STREAM, {"e": e.model_dump_json()})
            ids.append(e.id)
        pipe.execute()
        return ids

    def logs(self) -> str:
        return "\n".join(w.log() for w in self.workers)


@contextlib.contextmanager
def _bench(tmp: Path, behaviour: Any, **delivery: Any) -> Iterator[Bench]:
    server = RedisServer().start()
    sink = RecordingSink(behaviour).__enter__()
    cfg = {"server": {"redis_url": server.url},
           "delivery": {"lease": "3s", "timeout": "5s", "base_delay": "3s", "max_delay": "3s",
                        "circuit_threshold": 10000, **delivery},
           "destinations": {"crm": {"type": "webhook", "url": f"{sink.url}/hook"}},
           "routes": [{"events": ["*"], "to": ["crm"]}]}
    b = Bench(tmp, server, sink, write_config(tmp / "postrelay.toml", cfg))
    try:
        yield b
    finally:
        for w in b.workers:
            w.kill()
        sink.__exit__(None, None, None)
        server.cleanup()


def _fail_first(wid: str, n: int) -> Behaviour:
    return Behaviour(kind="status", status=500) if n == 0 else Behaviour()


def _retry_lateness(sink: RecordingSink, delay: float, resumed: float) -> list[float]:
    """Per event: seconds between when its retry could first run (its first 500 + the retry delay, or when
    Redis / the worker was back, whichever is later) and its 2xx."""
    first: dict[str, float] = {}
    ok: dict[str, float] = {}
    for rec in sink.records:
        if rec.status == 500:
            first.setdefault(rec.webhook_id, rec.arrived)
        elif rec.status is not None and rec.status < 300 and rec.finished is not None:
            ok.setdefault(rec.webhook_id, rec.arrived)
    return [ok[w] - max(first[w] + delay, resumed) for w in first if w in ok]


def _children(pid: int) -> list[int]:
    """Processes whose parent is `pid`."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    return out


def _group_alive(pgid: int) -> list[int]:
    """Processes still running in process group `pgid`."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[2]) == pgid and fields[0] != "Z":
                    out.append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    return out


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.fixture
def bench_500_then_200(tmp_path: Path) -> Iterator[Bench]:
    with _bench(tmp_path, _fail_first) as b:
        yield b


def test_retries_run_on_time_through_a_redis_restart(bench_500_then_200: Bench) -> None:
    """Every event's first attempt gets a 500 (retry due 1.5-3 s later); Redis is restarted (SIGTERM, AOF)
    before the retries are due. Each retry must follow within seconds (RQ's scheduler: 10-17 minutes)."""
    b = bench_500_then_200
    n = soak(60, 600)
    b.start_workers(2)
    ids = b.push(n, "rr")
    assert wait_for(lambda: len(b.sink.records) >= n, 30), b.logs()[-3000:]
    b.server.stop()  # SIGTERM: Redis writes its AOF and exits
    time.sleep(1.0)
    b.server.start()  # same data dir: the AOF is loaded
    resumed = time.monotonic()
    assert wait_for(lambda: set(ids) <= set(b.sink.answered_2xx()), 60), b.logs()[-3000:]
    late = _retry_lateness(b.sink, 3.0, resumed)
    dup = sum(1 for c in b.sink.answered_2xx().values() if c > 1)
    emit(Report("redis_restart_retries", n, n, len(set(ids) - set(b.sink.answered_2xx())), dup,
                {"retry_late_max_s": round(max(late), 2), "retry_late_p50_s": round(statistics.median(late), 2)}))
    assert dup == 0
    assert max(late) < 5.0, f"retries ran up to {max(late):.1f} s late after the restart"
    assert all(w.alive for w in b.workers)


def test_worker_restarted_within_seconds_retries_on_time_and_leaves_no_child(bench_500_then_200: Bench) -> None:
    """SIGKILL the only worker right after the first attempts (its RQ scheduler lock used to outlive it for 61 s,
    and its scheduler child kept running) and start a new one at once: the retries still run on time."""
    b = bench_500_then_200
    n = soak(40, 400)
    b.start_workers(1)
    w = b.workers[0]
    ids = b.push(n, "wr")
    assert wait_for(lambda: len(b.sink.records) >= n, 30), b.logs()[-3000:]
    pid = w.pid
    assert pid is not None and _children(pid) == [], "the worker started a child process"
    os.kill(pid, signal.SIGKILL)  # the process only, not its group: anything it started would survive
    w.proc.wait(10)  # type: ignore[union-attr]
    orphans = _group_alive(pid)
    w.proc = None
    w.start()
    resumed = time.monotonic()
    assert orphans == [], f"processes outlived the SIGKILLed worker: {orphans}"
    assert wait_for(lambda: set(ids) <= set(b.sink.answered_2xx()), 60), b.logs()[-3000:]
    late = _retry_lateness(b.sink, 3.0, resumed)
    dup = sum(1 for c in b.sink.answered_2xx().values() if c > 1)
    emit(Report("worker_restart_retries", n, n, len(set(ids) - set(b.sink.answered_2xx())), dup,
                {"retry_late_max_s": round(max(late), 2), "orphans": len(orphans)}))
    assert dup == 0
    # at most the lease (3 s: retries the killed worker had claimed wait for it) plus the new worker's start-up,
    # which took up to ~2.7 s with four test processes on two cores (RQ's scheduler: 61 s and more)
    assert max(late) < 3.0 + 4.0, f"retries ran up to {max(late):.1f} s late after the worker restart"


def test_full_redis_during_deliveries_each_event_once_and_no_hot_loop(tmp_path: Path) -> None:
    """Destinations answer 2xx while Redis is at `maxmemory` (noeviction): the done markers cannot be written
    (OOM) until memory returns. Each event must reach the destination exactly once, and the worker must wait
    quietly meanwhile (it used to restart its RQ loop ~1,500 times a second)."""
    with _bench(tmp_path, lambda wid, n: Behaviour(delay=0.5), lease="3s") as b:
        n = soak(120, 1200)
        b.start_workers(1)
        r = b.redis
        ids = b.push(n, "oom")
        assert wait_for(lambda: len(b.sink.records) >= 8, 20), b.logs()[-3000:]
        r.config_set("maxmemory", max(1, int(r.info("memory")["used_memory"]) - 1_000_000))
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            r.set("probe", "x" * 1000)
        pid = b.workers[0].pid
        assert pid is not None
        lines_before = b.logs().count("\n")
        cpu_before, t0 = _cpu_seconds(pid), time.monotonic()
        answered_in_oom = wait_for(lambda: len(b.sink.answered_2xx()) >= 8, 10)
        time.sleep(max(0.0, 8.0 - (time.monotonic() - t0)))  # a full Redis for 8 s
        cpu = (_cpu_seconds(pid) - cpu_before) / (time.monotonic() - t0)
        log_lines = b.logs().count("\n") - lines_before
        r.config_set("maxmemory", 0)  # memory is back
        assert wait_for(lambda: set(ids) <= set(b.sink.answered_2xx()), 90), b.logs()[-3000:]
        time.sleep(4.0)  # anything re-sent (after a lease, 3 s) would show up now
        answered = b.sink.answered_2xx()
        dup = sum(1 for c in answered.values() if c > 1)
        lost = len(set(ids) - set(answered))
        emit(Report("full_redis", n, n, lost, dup, {"answered_while_full": answered_in_oom,
                                                   "cpu_while_full": round(cpu, 3), "log_lines_while_full": log_lines}))
        assert answered_in_oom, "no 2xx was answered while Redis was full: the test did not test anything"
        assert lost == 0 and dup == 0, f"lost={lost} duplicated={dup}\n{b.logs()[-3000:]}"
        assert cpu < 0.2, f"the worker used {cpu:.0%} CPU while Redis was full"
        assert log_lines < 60, f"{log_lines} log lines in 8 s of a full Redis"
        assert b.workers[0].alive


def test_done_marker_window_after_a_2xx_is_measured(tmp_path: Path) -> None:
    """How long after a destination's 2xx went out is its done marker stored? (A worker SIGKILLed inside that
    window re-sends the delivery.) Measured with Redis' MONITOR timestamps (server clock) of each
    `delivery_complete` call against the time the destination started writing its 2xx (an upper bound: it
    includes writing the answer and the worker reading it), at up to 32 concurrent attempts in one worker."""
    with _bench(tmp_path, lambda wid, n: Behaviour(delay=0.02)) as b:
        n = soak(600, 6000)
        stored: dict[str, float] = {}
        ready = threading.Event()
        complete = f"EVALSHA {lua('delivery_complete').sha} "

        def watch() -> None:
            with b.redis.monitor() as m:
                ready.set()
                for cmd in m.listen():
                    text = cmd.get("command", "")
                    if text.startswith(complete) and " pr:done:{crm|" in text:
                        eid = text.split(" pr:done:{crm|", 1)[1].split("}", 1)[0]
                        stored.setdefault(eid, float(cmd["time"]))
                    if len(stored) >= n:
                        return

        t = threading.Thread(target=watch, daemon=True)
        t.start()
        assert ready.wait(5)
        b.start_workers(1)
        ids = b.push(n, "win")
        assert wait_for(lambda: len(stored) >= n, 90), b.logs()[-3000:]
        assert wait_for(lambda: len(b.sink.answered_2xx()) >= n, 10)
        answering = {rec.webhook_id: rec.answering_wall for rec in b.sink.records if rec.answering_wall is not None}
        gaps = sorted(max(0.0, stored[i] - answering[i]) * 1000 for i in ids if i in answering and i in stored)
        p50, p99 = gaps[len(gaps) // 2], gaps[int(len(gaps) * 0.99) - 1]
        emit(Report("done_marker_window", n, n, n - len(gaps), 0,
                    {"window_ms_p50": round(p50, 1), "window_ms_p99": round(p99, 1),
                     "window_ms_max": round(gaps[-1], 1)}))
        assert len(gaps) == n
        # milliseconds on a quiet machine (docs/guarantees.md); the bound leaves room for a saturated CI machine
        # (p99 180 ms seen at load 12 on 2 cores) and still catches a marker written after any batching or linger
        assert p99 < 500, f"the 2xx -> done-marker window is {p99:.0f} ms at p99"


@pytest.mark.soak
def test_workers_sigkilled_anywhere_duplicates_counted_at_the_destination(tmp_path: Path) -> None:
    """Workers SIGKILLed at random moments, answers not held (kills may land between a 2xx and its done
    marker): nothing is lost; duplicates are what the destination answered 2xx twice, and stay within what
    the measured window allows; the killed workers' deliveries are re-run within ~2 x lease."""
    with _bench(tmp_path, lambda wid, n: Behaviour(delay=0.01)) as b:
        n = soak(1500, 15000)
        kills = soak(6, 40)
        rng = random.Random(int(os.environ.get("POSTRELAY_FAULT_SEED", "18")))
        b.start_workers(2)
        ids = b.push(n, "sk")
        t0 = time.monotonic()
        for _ in range(kills):
            time.sleep(rng.uniform(0.2, 0.8))
            victim = rng.choice(b.workers)
            victim.kill()
            victim.start()
        assert wait_for(lambda: set(ids) <= set(b.sink.answered_2xx()), 120), b.logs()[-3000:]
        elapsed = time.monotonic() - t0
        time.sleep(4.0)
        answered = b.sink.answered_2xx()
        dup = sum(1 for c in answered.values() if c > 1)
        lost = len(set(ids) - set(answered))
        first_seen: dict[str, float] = {}
        first_ok: dict[str, float] = {}
        for rec in b.sink.records:
            first_seen.setdefault(rec.webhook_id, rec.arrived)
            if rec.outcome == "answered" and rec.status is not None and rec.status < 300:
                first_ok.setdefault(rec.webhook_id, rec.arrived)
        # a delivery a kill interrupted (sent more than once): how long until it was answered
        resent_after = [first_ok[w] - first_seen[w] for w in first_ok if first_ok[w] > first_seen[w]]
        rate = n / elapsed
        emit(Report("sigkill_anywhere", n, n, lost, dup,
                    {"kills": kills, "rate_per_s": round(rate), "duplicates_per_kill": round(dup / kills, 2),
                     "implied_window_ms": round(1000 * dup / kills / rate, 1),
                     "recovery_max_s": round(max(resent_after), 1) if resent_after else None}))
        assert lost == 0, b.logs()[-3000:]
        assert dup <= kills * 4, f"{dup} duplicates over {kills} kills"
        assert not resent_after or max(resent_after) < 4 * 3.0 + 2
