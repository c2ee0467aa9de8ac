"""Batched CRM writes (issue 17 part 2): N events for N contacts into a local HubSpot stand-in that allows
100 requests per 10 s and answers 429 beyond, batched (`batch_size = 100`, `batch_linger = "1 s"`) and, in the
same run, per event.

The stand-in (`tests/support/hubspot_standin.py`, in this process) counts at its end what arrived: API calls,
429s, notes per postrelay event id (lost = events without a note, duplicated = notes beyond one per event).
Events are put straight into the ingest stream (with their dedupe markers, as the receiver's script does)
before one `postrelay worker` starts; the drain time runs from the stand-in's first request to the last note.
Each batch costs two calls (contacts `batch/upsert`, notes `batch/create`), so the ideal drain is
`events / (batch size x allowed rate) x 2`. Per-event delivery (two calls per event) would take hours for N
events, so it runs on a smaller count and is extrapolated (the row says so).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.context import Context
from bench.procs import Proc, python
from bench.report import Row
from tests.support.http_server import LocalHTTPServer
from tests.support.hubspot_standin import HubSpotStandIn

LIMIT, WINDOW = 100, 10.0  # the stand-in's rate limit: HubSpot's ten-secondly rolling window of a private app
BATCH, LINGER = 100, "1 s"
CALLS_PER_BATCH = 2
TOKEN = "bench-hubspot-token-0123456789"


def _config(work: Path, name: str, redis_url: str, url: str, batched: bool) -> Path:
    batching = f'batch_size = {BATCH}\nbatch_linger = "{LINGER}"\n' if batched else ""
    path = work / f"{name}.toml"
    path.write_text(f"""[server]
redis_url = "{redis_url}"

[destinations.crm]
type = "hubspot"
token = "{TOKEN}"
base_url = "{url}"
{batching}
[[routes]]
events = ["*"]
to = ["crm"]
""", encoding="utf-8")
    return path


def _prefill(ctx: Context, count: int, tag: str) -> list[str]:
    """XADD `count` events, one mailpiece and one contact each; returns their emails."""
    from postrelay.core import keys
    from postrelay.core.events import CanonicalEvent, Mailpiece, Recipient

    now = datetime.now(UTC)
    emails = [f"{tag}{i}@example.com" for i in range(count)]
    pipe = ctx.redis.r.pipeline(transaction=False)
    for i, email in enumerate(emails):
        event = CanonicalEvent.build(source="lob", source_event_id=f"{tag}_{i}", type="processed_for_delivery",
                                     occurred_at=now, mailpiece=Mailpiece(id=f"ltr_{tag}{i}", kind="letter"),
                                     recipient=Recipient(name="Bench", email=email))
        pipe.set(keys.seen(event.id), "1", nx=True, ex=3600)
        pipe.xadd(keys.INGEST_STREAM, {"e": event.model_dump_json()})
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()
    return emails


def measure(ctx: Context, count: int, batched: bool, timeout: float) -> dict[str, Any]:
    """One worker draining `count` events into a fresh stand-in."""
    ctx.redis.reset()
    standin = HubSpotStandIn(limit=LIMIT, window=WINDOW)
    stamps: list[float] = []
    answer = standin._answer

    def timed(req: Any) -> Any:
        reply = answer(req)
        stamps.append(time.monotonic())
        return reply

    standin._answer = timed  # type: ignore[method-assign]
    name = "batched" if batched else "per-event"
    with LocalHTTPServer(standin) as server:
        standin.add_contacts(_prefill(ctx, count, "b" if batched else "e"))
        config = _config(ctx.work, f"batching-{name}", ctx.redis.url, server.url, batched)
        proc = Proc(f"worker-batching-{name}", python("-m", "postrelay.cli", "worker", "--config", str(config)),
                    ctx.logs, {"POSTRELAY_LOG_LEVEL": "WARNING"}).start()
        try:
            deadline = time.monotonic() + timeout
            while len(standin.notes) < count and time.monotonic() < deadline:
                if not proc.alive():
                    raise RuntimeError(f"postrelay worker exited: {proc.log_tail()}")
                time.sleep(0.2)
            time.sleep(1.0)  # anything sent twice would arrive now
        finally:
            proc.stop()
    calls, throttled = standin.total_calls, standin.throttled
    notes = standin.notes
    seconds = (stamps[-1] - stamps[0]) if len(stamps) > 1 else 0.0
    return {"events": count, "seconds": round(seconds, 2), "calls": calls, "throttled": throttled,
            "lost": count - len(notes), "duplicated": sum(notes.values()) - len(notes),
            "events_per_call": round(count / max(1, calls), 2), "batch_sizes": standin.batch_sizes[:3],
            "calls_by_route": dict(standin.calls)}


def rows(batched: dict[str, Any], single: dict[str, Any]) -> list[Row]:
    """Table rows: drain time vs the ideal, events per call, 429s, per-event extrapolated."""
    n = batched["events"]
    ideal = n / (BATCH * LIMIT / WINDOW) * CALLS_PER_BATCH
    errors = batched["lost"] + batched["duplicated"]
    drain = Row("batching", f"HubSpot drain, {n:,} events for {n:,} contacts, batched ({BATCH}, {LINGER}), stand-in "
                f"{LIMIT} req/{WINDOW:g} s", "s", batched["seconds"], "ideal events/(batch x rate) x 2 calls per batch",
                ideal, "≤ 1.5x", errors=errors,
                note=f"lost {batched['lost']}, duplicated {batched['duplicated']} (counted at the stand-in); "
                     f"{batched['calls']} calls: {batched['calls_by_route']}")
    drain.met = drain.ratio is not None and drain.ratio <= 1.5 and errors == 0
    per_call = Row("batching", "HubSpot events per API call, batched", "events", batched["events_per_call"],
                   "per event (contact PATCH + note POST)", single["events_per_call"], "≥ 50",
                   errors=errors, note=f"first batch sizes {batched['batch_sizes']}")
    per_call.met = batched["events_per_call"] >= 50
    throttled = Row("batching", "HubSpot 429s, batched", "calls", batched["throttled"], "all calls, batched",
                    batched["calls"], "< 1% of calls", errors=errors,
                    note=f"per event: {single['throttled']} 429s of {single['calls']} calls")
    throttled.met = batched["throttled"] < 0.01 * batched["calls"]
    m = single["events"]
    extrapolated = single["seconds"] / max(1, m - 1) * n
    per_event = Row("batching", f"HubSpot drain, per event, extrapolated to {n:,} events", "s", round(extrapolated),
                    "batched drain (above)", batched["seconds"], "",
                    errors=single["lost"] + single["duplicated"],
                    note=f"EXTRAPOLATED: measured on {m:,} events in {single['seconds']} s ({single['calls']} calls, "
                         f"{single['throttled']} 429s, lost {single['lost']}, duplicated {single['duplicated']}), "
                         f"x {n / m:,.0f}")
    return [drain, per_call, throttled, per_event]


def run(ctx: Context) -> list[Row]:
    """Batched on the profile's count, per event on a smaller one; same stand-in limits."""
    p = ctx.profile
    batched = measure(ctx, p.batching_events, True, p.batching_timeout)
    single = measure(ctx, p.batching_per_event, False, p.batching_timeout)
    ctx.raw["batching"] = {"hubspot_batched": batched, "hubspot_per_event": single}
    return rows(batched, single)
