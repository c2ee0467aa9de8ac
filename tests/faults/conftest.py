"""Fault-test rig: a dedicated redis-server, real `postrelay serve` / `postrelay worker` processes, recording
destinations, and the report line every fault test prints (`sent=N accepted=N lost=0 duplicated=0`).

Short mode by default (CI); `POSTRELAY_SOAK=1` scales the loads up (`soak()` picks the number).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from postrelay.core import keys
from postrelay.core.timeline import load_piece
from tests.support.load import Outgoing, Secrets, SendResult
from tests.support.processes import ReceiverProcess, WorkerProcess, wait_for, write_config
from tests.support.redis_server import RedisServer
from tests.support.sink import RecordingSink
from tests.workers.conftest import clock, make_runtime  # noqa: F401  (worker-runtime fixtures, reused here)

SOAK = os.environ.get("POSTRELAY_SOAK", "") not in ("", "0")
API_TOKEN = "fault-read-api-token-6b1f0c9e2a"
REPORTS: list[str] = []


def soak(short: int, long: int) -> int:
    """`long` under POSTRELAY_SOAK=1, else `short`."""
    return long if SOAK else short


_reported = 0


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: Any, call: Any) -> Iterator[None]:
    """Attach the report lines a test emitted to its test report (`user_properties`), so they reach the
    terminal summary in tests/conftest.py also from pytest-xdist worker processes."""
    global _reported
    outcome = yield
    rep = outcome.get_result()  # type: ignore[attr-defined]
    if call.when == "teardown" and len(REPORTS) > _reported:
        rep.user_properties.extend(("fault_report", line) for line in REPORTS[_reported:])
        _reported = len(REPORTS)


@dataclass
class Report:
    """The numbers a fault test is judged by."""

    name: str
    sent: int
    accepted: int
    lost: int
    duplicated: int
    extra: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        """`<test>: sent=N accepted=N lost=N duplicated=N (k=v ...)`."""
        tail = " ".join(f"{k}={v}" for k, v in self.extra.items())
        return (f"{self.name}: sent={self.sent} accepted={self.accepted} lost={self.lost} "
                f"duplicated={self.duplicated}" + (f" ({tail})" if tail else ""))


def emit(report: Report) -> None:
    """Record the report for the terminal summary (tests/conftest.py; and print it for `-s` runs)."""
    REPORTS.append(report.line())
    print(report.line())


# routes: every event to `crm`; the later lifecycle events also to `ops`
OPS_TYPES = ["in_transit", "processed_for_delivery", "delivered"]


def expected_deliveries(events: list[Outgoing], accepted: set[str]) -> dict[str, set[str]]:
    """destination -> canonical ids it must receive exactly once."""
    out: dict[str, set[str]] = {"crm": set(), "ops": set()}
    for ev in events:
        if ev.canonical_id in accepted:
            out["crm"].add(ev.canonical_id)
            if ev.type in OPS_TYPES:
                out["ops"].add(ev.canonical_id)
    return out


@dataclass
class Rig:
    """Everything one fault test runs against."""

    tmp: Path
    redis_server: RedisServer
    secrets: Secrets
    sinks: dict[str, RecordingSink]
    config_path: Path
    receiver: ReceiverProcess
    workers: list[WorkerProcess]
    problems: list[str] = field(default_factory=list)

    @property
    def redis(self) -> redis.Redis:
        """A fresh client (the server may have been restarted)."""
        return redis.Redis(port=self.redis_server.port, socket_timeout=5)

    def start(self, workers: int = 2) -> Rig:
        """Start the receiver and `workers` workers, and wait until every worker has registered its heartbeat
        (a worker still starting when a test then kills Redis would exit: it checks Redis before it runs)."""
        self.receiver.start()
        before = len(self.workers)
        for i in range(workers):
            w = WorkerProcess(self.config_path, self.tmp / f"worker{before + i}.log")
            self.workers.append(w.start())
        r = self.redis
        assert wait_for(lambda: r.hlen(keys.WORKER_HEARTBEATS) >= before + workers, 60, 0.05), self.logs()[-3000:]
        return self

    def stop(self) -> None:
        """SIGKILL everything this rig started."""
        self.receiver.kill()
        for w in self.workers:
            w.kill()

    def logs(self) -> str:
        """Every process log."""
        return "\n".join(p.log() for p in [self.receiver, *self.workers])

    # --- verification --------------------------------------------------------------------------------------

    def diagnose(self, limit: int = 5) -> list[str]:
        """Redis state of the first lost deliveries (for failure messages)."""
        from postrelay.core.stores import deliveries

        r = self.redis
        out = []
        for problem in self.problems[:limit]:
            dest, rest = problem.split("|", 1)
            eid = rest.split()[0]
            key = deliveries.delivery_key(dest, eid)
            rec = {k.decode(): v.decode()[:60] for k, v in r.hgetall(keys.delivery_record(key)).items()
                   if k != b"event"}
            seq = rec.get("seq") or ""
            head = r.lrange(seq, 0, 3) if seq else []
            out.append(f"{problem}: done={r.exists(keys.delivery_done(key))} record={rec} seq_head={head} "
                       f"inflight={r.zscore(deliveries.DUE, key)} lock={r.get(keys.delivery_lock(key))} "
                       f"queued={r.llen('rq:queue:postrelay')} dlq={r.hexists('pr:dlq', key)}")
        return out

    def wait_delivered(self, expected: dict[str, set[str]], timeout: float) -> bool:
        """Wait until every expected delivery was answered 2xx at its sink."""
        def done() -> bool:
            return all(ids <= set(self.sinks[d].answered_2xx()) for d, ids in expected.items())
        return wait_for(done, timeout, 0.2)

    def check(self, name: str, events: list[Outgoing], sent: int, result: SendResult,
              extra: dict[str, Any] | None = None) -> Report:
        """Count lost and duplicated timeline entries and deliveries; emit the report line."""
        r = self.redis
        accepted = result.accepted
        by_piece: dict[tuple[str, str], set[str]] = {}
        for ev in events:
            if ev.canonical_id in accepted:
                by_piece.setdefault((ev.source, ev.piece), set()).add(ev.canonical_id)
        lost_timeline, dup_timeline, unexpected = 0, 0, 0
        for (source, piece), ids in by_piece.items():
            view = load_piece(r, source, piece)
            members = [e["id"] for e in view["events"]] if view else []
            lost_timeline += len(ids - set(members))
            dup_timeline += len(members) - len(set(members))
            unexpected += len(set(members) - ids)
        expected = expected_deliveries(events, accepted)
        lost_dlv, dup_dlv = 0, 0
        self.problems = []
        for dest, ids in expected.items():
            answered = self.sinks[dest].answered_2xx()
            lost_dlv += len(ids - set(answered))
            dup_dlv += sum(1 for i, n in answered.items() if n > 1)
            unexpected += len(set(answered) - ids)
            self.problems += [f"{dest}|{i} lost" for i in sorted(ids - set(answered))]
            self.problems += [f"{dest}|{i} answered {n}x" for i, n in answered.items() if n > 1]
        outcomes = {d: dict(s.outcomes()) for d, s in self.sinks.items()}
        report = Report(name, sent, len(accepted), lost_timeline + lost_dlv, dup_timeline + dup_dlv,
                        {"deliveries": sum(len(v) for v in expected.values()), "unexpected": unexpected,
                         "rejected": len(result.rejected), "gave_up": len(result.gave_up),
                         "dead_letters": int(r.hlen("pr:dlq")), **(extra or {}), "sinks": outcomes})
        emit(report)
        return report


def base_config(redis_url: str, secrets: Secrets, sinks: dict[str, RecordingSink], **delivery: Any) -> dict[str, Any]:
    """Receiver + worker config: every signed source, `crm` gets all events, `ops` the later lifecycle ones."""
    return {
        "server": {"redis_url": redis_url, "api_token": API_TOKEN, "redis_timeout": "1s", "retry_after": 1},
        "sources": secrets.sources(),
        "delivery": {"lease": "3s", "timeout": "5s", "base_delay": "0.2s", "max_delay": "2s",
                     "circuit_threshold": 50, "circuit_cooldown": "1s", "circuit_max_cooldown": "2s", **delivery},
        "destinations": {name: {"type": "webhook", "url": f"{sink.url}/hook/{name}"} for name, sink in sinks.items()},
        "routes": [{"events": ["*"], "to": ["crm"]}, {"events": OPS_TYPES, "to": ["ops"]}],
    }


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    """A dedicated Redis, two recording sinks and the config; the test calls `rig.start()`."""
    server = RedisServer().start()
    sinks = {"crm": RecordingSink(name="crm"), "ops": RecordingSink(name="ops")}
    for s in sinks.values():
        s.__enter__()
    secrets = Secrets()
    config_path = write_config(tmp_path / "postrelay.toml", base_config(server.url, secrets, sinks))
    rg = Rig(tmp_path, server, secrets, sinks, config_path, ReceiverProcess(config_path, tmp_path / "receiver.log"), [])
    try:
        yield rg
    finally:
        rg.stop()
        for s in sinks.values():
            s.__exit__(None, None, None)
        server.cleanup()


def settle(seconds: float) -> None:
    """Let in-flight work finish (bounded)."""
    time.sleep(seconds)
