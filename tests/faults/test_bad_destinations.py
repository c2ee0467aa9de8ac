"""Destinations that hang, reset connections, answer slowly, drip their answer or flap, next to a healthy one.

The healthy destination keeps its throughput (it gets every event, in about the time it gets them alone),
every attempt against a bad one ends within a bounded time, and nothing is delivered twice.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.faults.conftest import API_TOKEN, Report, emit, soak
from tests.support.load import Secrets, Sender, make_events
from tests.support.processes import ReceiverProcess, WorkerProcess, wait_for, write_config
from tests.support.redis_server import RedisServer
from tests.support.sink import Behaviour, RecordingSink

TIMEOUT = 1.0
THRESHOLD = 3
WORKERS = 2


def _flap(wid: str, n: int) -> Behaviour:
    up = int(time.monotonic() / 1.5) % 2 == 0  # 1.5 s up, 1.5 s down
    return Behaviour(status=200 if up else 503)


BEHAVIOURS = {
    "healthy": lambda wid, n: Behaviour(),
    "hangs": lambda wid, n: Behaviour(kind="hang"),
    "resets": lambda wid, n: Behaviour(kind="reset"),
    "slow": lambda wid, n: Behaviour(delay=3 * TIMEOUT),  # answers long after the timeout
    "drips": lambda wid, n: Behaviour(kind="drip", drip_interval=TIMEOUT * 0.6),  # never idle for a full read timeout
    "flaps": _flap,
}


def _longest_attempts(logs: str) -> dict[str, float]:
    """destination -> the longest attempt in seconds, from the workers' JSON delivery log lines."""
    out: dict[str, float] = {}
    for line in logs.splitlines():
        if not line.startswith("{"):
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("duration_ms") is not None and entry.get("destination"):
            dest = entry["destination"]
            out[dest] = round(max(out.get(dest, 0.0), entry["duration_ms"] / 1000), 2)
    return out


def _rate(times: list[float]) -> float:
    """Deliveries per second over the second half of `times` (after the circuits had time to open)."""
    half = times[len(times) // 2:]
    return (len(half) - 1) / max(1e-3, half[-1] - half[0])


def _run(tmp: Path, names: list[str], n: int, tag: str) -> tuple[dict[str, RecordingSink], float, str]:
    """Send `n` events routed to every destination in `names`; returns the sinks, the healthy one's
    completion time, and the worker logs."""
    server = RedisServer().start()
    sinks = {name: RecordingSink(BEHAVIOURS[name], name=name) for name in names}
    for s in sinks.values():
        s.__enter__()
    secrets = Secrets()
    config = write_config(tmp / f"{tag}.toml", {
        "server": {"redis_url": server.url, "api_token": API_TOKEN, "retry_after": 1},
        "sources": secrets.sources(),
        "delivery": {"timeout": f"{TIMEOUT}s", "lease": "5s", "base_delay": "0.5s", "max_delay": "2s",
                     "circuit_threshold": THRESHOLD, "circuit_cooldown": "5s", "circuit_max_cooldown": "30s"},
        "destinations": {name: {"type": "webhook", "url": f"{sink.url}/{name}"} for name, sink in sinks.items()},
        "routes": [{"events": ["*"], "to": names}],
    })
    receiver = ReceiverProcess(config, tmp / f"{tag}-receiver.log")
    workers = [WorkerProcess(config, tmp / f"{tag}-worker{i}.log") for i in range(WORKERS)]
    try:
        receiver.start()
        for w in workers:
            w.start()
        events = make_events(n, pieces=n // 3, secrets=secrets, tag=tag)
        started = time.monotonic()
        result = Sender(receiver.url, threads=4, rate=0).run(events)
        assert len(result.accepted) == n
        ids = {ev.canonical_id for ev in events}
        healthy = sinks["healthy"]
        assert wait_for(lambda: ids <= set(healthy.answered_2xx()), 60, 0.1), \
            f"the healthy destination got {len(healthy.answered_2xx())}/{n}"
        elapsed = time.monotonic() - started
        # attempts at the bad destinations run beside the healthy ones: let their first ones end (bounded)
        bad = {name for name in names if name not in {"healthy", "flaps", "resets"}}
        wait_for(lambda: bad <= set(_longest_attempts("\n".join(w.log() for w in workers))), 4 * TIMEOUT + 5, 0.2)
        logs = "\n".join(w.log() for w in workers)
        return sinks, elapsed, logs
    finally:
        receiver.kill()
        for w in workers:
            w.kill()
        for s in sinks.values():
            s.__exit__(None, None, None)
        server.cleanup()


@pytest.mark.soak
def test_bad_destinations_do_not_starve_a_healthy_one(tmp_path: Path) -> None:
    n = soak(90, 900)
    alone_sinks, alone, _ = _run(tmp_path, ["healthy"], n, "alone")
    sinks, mixed, logs = _run(tmp_path, list(BEHAVIOURS), n, "mixed")
    healthy = sinks["healthy"].answered_2xx()
    flaps = sinks["flaps"].answered_2xx()
    rate_alone = _rate(alone_sinks["healthy"].answered_times())
    rate_mixed = _rate(sinks["healthy"].answered_times())
    longest = _longest_attempts(logs)
    emit(Report("bad_destinations", n, n, n - len(healthy), sum(1 for c in healthy.values() if c > 1),
                {"healthy_alone_s": round(alone, 2), "healthy_mixed_s": round(mixed, 2),
                 "steady_rate_alone": round(rate_alone, 1), "steady_rate_mixed": round(rate_mixed, 1),
                 "flaps_delivered": len(flaps), "longest_attempt_s": longest,
                 "attempts": {k: len(s.records) for k, s in sinks.items()}}))
    assert len(healthy) == n and all(c == 1 for c in healthy.values())
    assert all(c == 1 for c in flaps.values()), "a flapping destination got an event twice"
    # what the bad destinations can cost the healthy one: the attempts that open their circuits, each
    # bounded by the timeout (a dripping answer included), shared by the workers
    bad = len(BEHAVIOURS) - 1
    assert mixed < alone + (THRESHOLD + 1) * bad * 2 * TIMEOUT / WORKERS + 3, (alone, mixed)
    # once the circuits are open the healthy destination keeps flowing: starved it would drop to ~0. The
    # bound leaves room for the noise of a shared 2-core CI machine (seen 0.196-0.95 of the solo rate there:
    # the two runs are measured at different moments, five bad destinations' attempts share the worker's
    # executor and three other test processes share the cores), and still tells flowing from starved
    assert rate_mixed > 0.1 * rate_alone, (rate_alone, rate_mixed)
    # every attempt ended within about the timeout: hanging, slow and dripping answers included
    assert set(longest) >= {"hangs", "slow", "drips"}, longest
    assert max(longest.values()) < 2 * TIMEOUT + 0.5, longest
