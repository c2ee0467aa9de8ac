"""End-to-end: a provider's POST → receiver → Redis → one `postrelay worker` → the webhook destination.

One receiver (1 uvicorn worker), one worker process and the no-op destination (bench.sink) run together;
the route sends every event to a `webhook` destination at the sink. The open-loop driver posts signed
PostGrid events at a steady rate and reports when each was *due*; the sink records when each relayed
webhook (`webhook-id` = canonical event id) arrived. Latency = arrival - due time (same clock, same host).
The baseline is the same driver posting the same requests straight to the sink at the same rate.

Redis memory is measured here too, after the worker is idle: per mailpiece (mailpieces with one event,
every key postrelay keeps: dedupe marker, piece state/timeline/events, delivery done marker) and per
additional event (a second status change for existing mailpieces).
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

from bench import drivers
from bench.context import Context, Sink
from bench.payloads import RequestSet, body_for, write_requests
from bench.report import Row, at_most
from bench.stats import summarize

DUE = "pr:dlv:inflight"  # deliveries not finished yet (postrelay.core.keys.DELIVERIES_DUE)
STREAM = "pr:{in}:stream"
P50_TARGET_MS, P99_TARGET_MS = 50.0, 250.0
TARGET_RATE = 500  # the targets are stated at 500 events/s


def canonical_json_bytes() -> int:
    """Size of one canonical event as the receiver stores and relays it (the memory baseline)."""
    from datetime import UTC

    from postrelay.receiver.providers import postgrid

    event = postgrid.normalize(json.loads(body_for("e", 0)), datetime.now(UTC)).events[0]
    return len(event.model_dump_json())


def wait_idle(ctx: Context, timeout: float) -> None:
    """Until the ingest stream and the delivery queue are empty (and stay so briefly)."""
    r = ctx.redis.r
    deadline = time.monotonic() + timeout
    quiet = 0
    while time.monotonic() < deadline and quiet < 3:
        quiet = quiet + 1 if not r.xlen(STREAM) and not r.zcard(DUE) else 0
        time.sleep(0.1)


def relay_run(ctx: Context, sink: Sink, port: int, rs: RequestSet, offset: int, rate: float, warmup: float,
              duration: float) -> dict[str, Any]:
    """Post at `rate`, wait for every accepted event at the sink, compute the latencies."""
    before = sink.count()
    run = drivers.fixed_rate(port, rs.path, offset, rate, warmup, duration, ctx.profile.drain)
    expected = before + run["requests_sent"] - run["errors"]
    sink.wait_for(expected, ctx.profile.e2e_drain)
    arrivals = {a[0]: (a[1], a[2]) for a in sink.stats()["arrivals"]}
    warm_n = int(warmup * rate)
    e2e, hop = [], []
    missing = 0
    for k in range(warm_n, run["requests_sent"]):
        got = arrivals.get(rs.canonical_id(offset + k))
        if got is None:
            missing += 1
            continue
        arrived, received_at = got
        e2e.append(arrived - (run["t0_wall"] + k / rate))
        if received_at:
            hop.append(arrived - datetime.fromisoformat(received_at).timestamp())
    return {"driver": run, "e2e_ms": summarize(e2e, 1000.0), "received_to_arrival_ms": summarize(hop, 1000.0),
            "undelivered": missing, "errors": run["errors"] + missing, "next_offset": offset + run["requests_sent"]}


def measure(ctx: Context) -> dict[str, Any]:
    """Direct baseline, e2e at the low and the target rate, then the memory waves."""
    p = ctx.profile
    n1 = int((p.e2e_warmup + p.e2e_duration) * (p.e2e_rate + p.e2e_low_rate)) + 10
    wave1 = write_requests(ctx.work / "e2e.txt", n1, "e")
    wave2 = write_requests(ctx.work / "e2e-2.txt", p.second_wave, "e", stage=1)  # same pieces, next status
    out: dict[str, Any] = {}
    ctx.redis.reset()
    with ctx.sink() as sink, ctx.server("postrelay", 1, sink.url) as srv, ctx.worker(sink.url) as worker:
        direct = drivers.fixed_rate(sink.port, wave1.path, 0, p.e2e_rate, p.e2e_warmup, p.e2e_duration, p.drain,
                                    path="/direct")
        out["direct"] = direct
        out["direct_low"] = drivers.fixed_rate(sink.port, wave1.path, 0, p.e2e_low_rate, p.e2e_warmup, p.e2e_duration,
                                               p.drain, path="/direct")
        sink.reset()
        wait_idle(ctx, 5)
        mem0 = ctx.redis.used_memory()
        low = relay_run(ctx, sink, srv.port, wave1, 0, p.e2e_low_rate, p.e2e_warmup, p.e2e_duration)
        high = relay_run(ctx, sink, srv.port, wave1, low["next_offset"], p.e2e_rate, p.e2e_warmup, p.e2e_duration)
        out["low"], out["high"] = low, high
        wait_idle(ctx, p.e2e_drain)
        pieces = sink.count()
        mem1 = ctx.redis.used_memory()
        second = drivers.fixed_rate(srv.port, wave2.path, 0, p.e2e_rate, 0, p.second_wave / p.e2e_rate, p.drain)
        sink.wait_for(pieces + second["requests_sent"], p.e2e_drain)
        wait_idle(ctx, p.e2e_drain)
        events2 = sink.count() - pieces
        mem2 = ctx.redis.used_memory()
        out["memory"] = {"before": mem0, "after_wave1": mem1, "after_wave2": mem2, "pieces": pieces,
                         "second_events": events2, "per_piece": (mem1 - mem0) / max(1, pieces),
                         "per_event": (mem2 - mem1) / max(1, events2), "event_json_bytes": canonical_json_bytes(),
                         "key_sizes": key_sizes(ctx), "second_wave_errors": second["errors"]}
        out["worker_rss_mb"] = worker.peak_rss_mb()
        out["receiver_rss_mb"] = srv.proc.peak_rss_mb()
    ctx.redis.reset()
    return out


def key_sizes(ctx: Context) -> dict[str, int]:
    """`MEMORY USAGE` of one key of each kind, for the breakdown in the notes."""
    r = ctx.redis.r
    out = {}
    for pattern in ("pr:{in}:seen:*", "pr:piece:{*}", "pr:piece:{*}:timeline", "pr:piece:{*}:events",
                    "pr:done:{*}"):
        for key in r.scan_iter(match=pattern, count=1000):
            if pattern.endswith("}") and key.decode().endswith(("timeline", "events")):
                continue
            out[pattern] = int(r.memory_usage(key, samples=0) or 0)
            break
    return out


def _latency_rows(name: str, res: dict[str, Any], direct: dict[str, Any], rate: int, targets: bool,
                  drain: float) -> list[Row]:
    rows = []
    for q, bound in (("p50", P50_TARGET_MS), ("p99", P99_TARGET_MS)):
        value = res["e2e_ms"].get(q)
        r = Row("end-to-end", f"{name} {q}, POST → destination, 1 worker", "ms", value,
                f"direct POST to the destination @{rate:,}/s {q}", direct["latency_ms"].get(q),
                f"≤ {bound:g} ms" if targets else "", errors=res["errors"])
        if targets:
            r.met = bool(at_most(value, bound)) and res["errors"] == 0
        if q == "p50":
            hop = res["received_to_arrival_ms"]
            r.note = (f"{res['e2e_ms'].get('count', 0):,} delivered, {res['undelivered']} not delivered within "
                      f"{drain:g} s after the last POST; max {res['e2e_ms'].get('max', float('nan')):.0f} ms; receiver "
                      f"`received_at` → destination p50 {hop.get('p50', float('nan')):.1f} / p99 "
                      f"{hop.get('p99', float('nan')):.1f} ms")
        rows.append(r)
    return rows


def rows(ctx: Context, res: dict[str, Any]) -> list[Row]:
    """Table rows."""
    p = ctx.profile
    out = _latency_rows(f"@{p.e2e_rate:,} events/s", res["high"], res["direct"], p.e2e_rate, p.e2e_rate == TARGET_RATE,
                         p.e2e_drain)
    out += _latency_rows(f"@{p.e2e_low_rate:,} events/s (reference)", res["low"], res["direct_low"],
                         p.e2e_low_rate, False, p.e2e_drain)
    mem = res["memory"]
    sizes = ", ".join(f"{k} {v} B" for k, v in mem["key_sizes"].items())
    out.append(Row("memory", "Redis per mailpiece (1 event, all retained keys)", "B", mem["per_piece"],
                   "canonical event JSON", mem["event_json_bytes"], "",
                   note=f"{mem['pieces']:,} mailpieces, used_memory {mem['before']:,} → {mem['after_wave1']:,} B; "
                        f"one key of each kind: {sizes}"))
    out.append(Row("memory", "Redis per additional event of a mailpiece", "B", mem["per_event"],
                   "canonical event JSON", mem["event_json_bytes"], "", errors=mem["second_wave_errors"],
                   note=f"{mem['second_events']:,} second status changes, used_memory → {mem['after_wave2']:,} B"))
    return out


def run(ctx: Context) -> list[Row]:
    """Measure and build the rows."""
    res = measure(ctx)
    ctx.raw["e2e"] = res
    return rows(ctx, res)
