"""A Python load driver, run as its own process: open loop at a fixed rate, or closed loop at a concurrency.

`python -m bench.loadgen --port P --file F (--rate R | --concurrency C) --duration D [--warmup W]` prints
one JSON object on stdout.

Open loop (the wrk2 idea, since wrk2 is not available): request `i` is *due* at `t0 + i/rate` whatever
happened to earlier ones; latency is measured from that intended time, not from when a connection was
free, so a stalled server is charged for the whole queue it caused (no coordinated omission). Requests
go out on idle keep-alive connections; when none is idle a new one is opened (up to `--max-conns`),
beyond that they wait in a backlog (still charged from their due time). After the last send the driver
waits up to `--drain` seconds; what is still outstanding then counts as `timeouts`. `measured_wall` is the
epoch interval from the first measured request's due time to the last answer (or send); `--latencies FILE`
writes every measured latency, for pooling rounds (bench.scenarios.links' host-quiet rounds).

Closed loop: `C` connections send back to back; used only when `wrk` is missing.

The driver is callback-based on uvloop with pre-built request bytes, so it stays cheap, but on a 2-core
machine it still competes with the server for CPU; it reports its own CPU seconds and, in open loop, its
own lateness (`driver_lag_ms`: how long after its due time each measured request was handed to a
connection — when that p99 is close to the latency p99, the driver or the machine's scheduling, not the
server, sets the tail). The garbage collector is off while requests are timed (it is run and the loaded
requests frozen first): a collection pause inside the driver would be charged to the server.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import gc
import json
import resource
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.payloads import WEBHOOK_PATH, raw_request, raw_visit, read_requests
from bench.stats import summarize

_CL = b"\r\ncontent-length:"
TICK = 0.001
_ok_below = 300  # statuses below this count as ok (400 with --visits: a 302 is the answer)


class _Conn(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time."""

    def __init__(self, driver: _Driver) -> None:
        self.driver = driver
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.current: tuple[int, float] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        while self.current is not None:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end]).lower()
            length = 0
            at = head.find(_CL)
            if at >= 0:
                stop = head.find(b"\r\n", at + len(_CL))
                length = int(head[at + len(_CL):stop if stop > 0 else end])
            total = end + 4 + length
            if len(buf) < total:
                return
            status = int(head[9:12])
            del buf[:total]
            current, self.current = self.current, None
            self.driver.completed(self, current, status)

    def connection_lost(self, exc: Exception | None) -> None:
        self.driver.lost(self)

    def send(self, payload: bytes, item: tuple[int, float]) -> None:
        self.current = item
        assert self.transport is not None
        self.transport.write(payload)


class _Driver:
    """Shared state of one run: connections, backlog, samples."""

    def __init__(self, host: str, port: int, requests: Sequence[bytes], measure_from: int, max_conns: int,
                 closed_loop: bool = False) -> None:
        self.loop = asyncio.get_running_loop()
        self.host, self.port = host, port
        self.requests = requests
        self.measure_from = measure_from
        self.max_conns = max_conns
        self.closed_loop = closed_loop
        self.idle: list[_Conn] = []
        self.conns: set[_Conn] = set()
        self.opening = 0
        self.backlog: collections.deque[tuple[int, float]] = collections.deque()
        self.outstanding = 0
        self.sending = True
        self.next_index = 0
        self.stop_at = float("inf")
        self.latencies: list[float] = []
        self.lags: list[float] = []  # open loop: when each measured request went out, after its due time
        self.statuses: collections.Counter[int] = collections.Counter()
        self.lost_requests = 0
        self.all_2xx = 0  # warm-up included
        self.connect_errors = 0
        self.first_measured: float | None = None
        self.last_measured_done = 0.0
        self.idle_event = asyncio.Event()

    def dispatch(self, index: int, intended: float) -> None:
        """Send request `index` now (on an idle connection, a new one, or after the backlog)."""
        self.outstanding += 1
        self.idle_event.clear()
        if index >= self.measure_from:
            if self.first_measured is None:
                self.first_measured = intended
            if not self.closed_loop:
                self.lags.append(time.perf_counter() - intended)
        if self.idle:
            self.idle.pop().send(self.requests[index % len(self.requests)], (index, intended))
        elif len(self.conns) + self.opening < self.max_conns:
            self.opening += 1
            self.loop.create_task(self._open_and_send(index, intended))
        else:
            self.backlog.append((index, intended))

    async def _open_and_send(self, index: int, intended: float) -> None:
        try:
            _, conn = await self.loop.create_connection(lambda: _Conn(self), self.host, self.port)
        except OSError:
            self.opening -= 1
            self.connect_errors += 1
            self._finish_one()
            return
        self.opening -= 1
        self.conns.add(conn)
        conn.send(self.requests[index % len(self.requests)], (index, intended))

    def completed(self, conn: _Conn, item: tuple[int, float], status: int) -> None:
        """A response arrived for `item` on `conn`."""
        now = time.perf_counter()
        index, intended = item
        if 200 <= status < _ok_below:
            self.all_2xx += 1
        if index >= self.measure_from:
            self.latencies.append(now - intended)
            self.statuses[status] += 1
            self.last_measured_done = now
        self._finish_one()
        if self.closed_loop and self.sending and now < self.stop_at:
            self.outstanding += 1
            index = self.next_index
            self.next_index += 1
            conn.send(self.requests[index % len(self.requests)], (index, time.perf_counter()))
        elif self.backlog:
            conn.send(self.requests[self.backlog[0][0] % len(self.requests)], self.backlog.popleft())
        else:
            self.idle.append(conn)

    def lost(self, conn: _Conn) -> None:
        """A connection closed; its in-flight request (if any) is lost."""
        self.conns.discard(conn)
        if conn in self.idle:
            self.idle.remove(conn)
        if conn.current is not None:
            conn.current = None
            self.lost_requests += 1
            self._finish_one()

    def _finish_one(self) -> None:
        self.outstanding -= 1
        if self.outstanding <= 0 and not self.backlog:
            self.idle_event.set()

    async def drain(self, timeout: float) -> int:
        """Wait for outstanding requests; returns how many never completed."""
        self.sending = False
        if self.outstanding > 0 or self.backlog:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.idle_event.wait(), timeout)
        left = max(0, self.outstanding)
        for conn in list(self.conns):
            if conn.transport is not None:
                conn.transport.close()
        return left


def _load(args: argparse.Namespace, total: int) -> list[bytes]:
    pairs = read_requests(Path(args.file), args.offset, min(total, args.count) if args.count else total)
    if args.visits:  # lines are `<path>\t<User-Agent>` (bench.payloads.write_visits)
        return [raw_visit(args.host, args.port, path, body.decode()) for path, body in pairs]
    return [raw_request(args.host, args.port, sig, body, args.path) for sig, body in pairs]


async def _prewarm(driver: _Driver, n: int) -> None:
    for _ in range(n):
        _, conn = await driver.loop.create_connection(lambda: _Conn(driver), driver.host, driver.port)
        driver.conns.add(conn)
        driver.idle.append(conn)


async def open_loop(args: argparse.Namespace) -> dict[str, Any]:
    """Fixed-rate run; see the module docstring."""
    rate = float(args.rate)
    warm_n = int(args.warmup * rate)
    total = warm_n + int(args.duration * rate)
    requests = _load(args, total)
    driver = _Driver(args.host, args.port, requests, warm_n, args.max_conns)
    await _prewarm(driver, min(args.max_conns, args.initial_conns))
    _quiet_gc()
    t0 = time.perf_counter() + 0.01
    t0_wall = time.time() + (t0 - time.perf_counter())
    index = 0
    while index < total:
        due = min(total, int((time.perf_counter() - t0) * rate) + 1)
        while index < due:
            driver.dispatch(index, t0 + index / rate)
            index += 1
        if index < total:
            # uvloop timers have 1 ms resolution: shorter sleeps would spin; due requests go out in small bursts.
            await asyncio.sleep(max(TICK, t0 + index / rate - time.perf_counter()))
    sent_end = time.perf_counter()
    timeouts = await driver.drain(args.drain)
    gc.enable()
    measure_start = t0 + warm_n / rate
    out = _result(driver, timeouts, len(requests))
    out.update(mode="open", offered_rate=rate, requests_sent=total, t0_wall=t0_wall, first_index=args.offset,
               send_lag_s=round(sent_end - (t0 + (total - 1) / rate), 4),
               driver_lag_ms=summarize(driver.lags, scale=1000.0),
               throughput=_throughput(driver, measure_start),
               measured_wall=[round(t0_wall + warm_n / rate, 4),
                              round(t0_wall + (max(driver.last_measured_done, sent_end) - t0), 4)])
    if args.latencies:
        Path(args.latencies).write_text(json.dumps([round(x, 6) for x in driver.latencies]))
    return out


async def closed_loop(args: argparse.Namespace) -> dict[str, Any]:
    """Back-to-back requests on `--concurrency` connections for warmup + duration seconds."""
    requests = _load(args, args.count or 100_000)
    driver = _Driver(args.host, args.port, requests, 0, args.concurrency, closed_loop=True)
    await _prewarm(driver, args.concurrency)
    _quiet_gc()
    start = time.perf_counter()
    driver.stop_at = start + args.warmup + args.duration
    for _ in range(args.concurrency):
        driver.dispatch(driver.next_index, time.perf_counter())
        driver.next_index += 1
    await asyncio.sleep(args.warmup)
    driver.measure_from = driver.next_index
    measure_start = time.perf_counter()
    await asyncio.sleep(args.duration)
    timeouts = await driver.drain(args.drain)
    gc.enable()
    out = _result(driver, timeouts, len(requests))
    out.update(mode="closed", concurrency=args.concurrency, requests_sent=driver.next_index,
               throughput=_throughput(driver, measure_start, measure_start + args.duration))
    return out


def _quiet_gc() -> None:
    """Collect once, freeze what survives (the loaded requests) and stop collecting until the run ends."""
    gc.collect()
    gc.freeze()
    gc.disable()


def _throughput(driver: _Driver, start: float, end: float | None = None) -> float:
    ok = sum(n for status, n in driver.statuses.items() if 200 <= status < _ok_below)
    end = end or driver.last_measured_done
    return round(ok / (end - start), 1) if end > start else 0.0


def _result(driver: _Driver, timeouts: int, loaded: int) -> dict[str, Any]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    ok = sum(n for status, n in driver.statuses.items() if 200 <= status < _ok_below)
    bad = sum(n for status, n in driver.statuses.items() if not 200 <= status < _ok_below)
    return {
        "ok": ok,
        "all_2xx": driver.all_2xx,
        "non_2xx": bad,
        "statuses": {str(k): v for k, v in sorted(driver.statuses.items())},
        "timeouts": timeouts,
        "lost": driver.lost_requests,
        "connect_errors": driver.connect_errors,
        "errors": bad + timeouts + driver.lost_requests + driver.connect_errors,
        "latency_ms": summarize(driver.latencies, scale=1000.0),
        "max_conns_used": len(driver.conns),
        "loaded_requests": loaded,
        "driver_cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
    }


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, run, print JSON."""
    p = argparse.ArgumentParser(prog="python -m bench.loadgen")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", default=WEBHOOK_PATH)
    p.add_argument("--file", required=True, help="request file written by bench.payloads")
    p.add_argument("--offset", type=int, default=0, help="first request line to use")
    p.add_argument("--count", type=int, default=0, help="at most this many request lines (0: as needed)")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--rate", type=float, help="open loop: requests per second")
    mode.add_argument("--concurrency", type=int, help="closed loop: connections")
    p.add_argument("--duration", type=float, default=5.0, help="measured seconds")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds sent before measuring")
    p.add_argument("--max-conns", type=int, default=256)
    p.add_argument("--initial-conns", type=int, default=32, help="connections opened before the clock starts")
    p.add_argument("--drain", type=float, default=5.0, help="seconds to wait for stragglers")
    p.add_argument("--visits", action="store_true", help="GET link visits (bench.payloads.write_visits); a 302 is ok")
    p.add_argument("--latencies", help="open loop: also write the measured latencies (s, JSON list) to this file")
    args = p.parse_args(argv)
    import uvloop

    global _ok_below
    _ok_below = 400 if args.visits else 300
    runner = open_loop if args.rate else closed_loop
    result = uvloop.run(runner(args))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
