"""Batched CRM writes (issue 17 part 2): N events for N contacts into a local HubSpot stand-in that allows
100 requests per 10 s and answers 429 beyond, batched (`batch_size = 100`, `batch_linger = "1 s"`) and, in the
same run, per event; then the same into a Salesforce stand-in with sObject Collections (`batch_size = 200`,
upsert by external id + a Task per event; 403 `REQUEST_LIMIT_EXCEEDED` beyond 100 requests per 10 s, which
Salesforce announces in no header, so the destination has `rate_limit = "95/10s"`).

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
from tests.support.salesforce_standin import SalesforceStandIn

LIMIT, WINDOW = 100, 10.0  # the stand-in's rate limit: HubSpot's ten-secondly rolling window of a private app
BATCH, LINGER = 100, "1 s"
CALLS_PER_BATCH = 2
TOKEN = "bench-hubspot-token-0123456789"
SF_BATCH, SF_RATE = 200, "95/10s"
SF_EXT = "Mail_Contact_Id__c"


HUBSPOT_LINES = f'type = "hubspot"\ntoken = "{TOKEN}"\n'
SALESFORCE_LINES = (f'type = "salesforce"\naccess_token = "00D5g!AQ0bench"\nexternal_id_field = "{SF_EXT}"\n'
                    f'external_id_metadata_key = "mid"\nrate_limit = "{SF_RATE}"\n')


def _config(work: Path, name: str, redis_url: str, url: str, batched: bool, hubspot: bool) -> Path:
    """The worker's config: one `crm` destination (the HubSpot or Salesforce stand-in at `url`), every event to it,
    batched (`batch_size`, `batch_linger`) or per event."""
    size = BATCH if hubspot else SF_BATCH
    batching = f'batch_size = {size}\nbatch_linger = "{LINGER}"\n' if batched else ""
    url_key = "base_url" if hubspot else "instance_url"
    path = work / f"{name}.toml"
    path.write_text(f"""[server]
redis_url = "{redis_url}"

[destinations.crm]
{HUBSPOT_LINES if hubspot else SALESFORCE_LINES}{url_key} = "{url}"
{batching}
[[routes]]
events = ["*"]
to = ["crm"]
""", encoding="utf-8")
    return path


def _prefill(ctx: Context, count: int, tag: str, type: str = "processed_for_delivery") -> list[str]:
    """XADD `count` events, one mailpiece and one contact each; returns their emails."""
    from postrelay.core import keys
    from postrelay.core.events import CanonicalEvent, Mailpiece, Recipient

    now = datetime.now(UTC)
    emails = [f"{tag}{i}@example.com" for i in range(count)]
    pipe = ctx.redis.r.pipeline(transaction=False)
    for i, email in enumerate(emails):
        event = CanonicalEvent.build(source="lob", source_event_id=f"{tag}_{i}", type=type,
                                     occurred_at=now, mailpiece=Mailpiece(id=f"ltr_{tag}{i}", kind="letter"),
                                     recipient=Recipient(name="Bench", email=email), metadata={"mid": f"MC-{tag}{i}"})
        pipe.set(keys.seen(event.id), "1", nx=True, ex=3600)
        pipe.xadd(keys.INGEST_STREAM, {"e": event.model_dump_json()})
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()
    return emails


def measure(ctx: Context, count: int, batched: bool, timeout: float, vendor: str = "hubspot") -> dict[str, Any]:
    """One worker draining `count` events into a fresh stand-in."""
    ctx.redis.reset()
    hubspot = vendor == "hubspot"
    standin: Any = HubSpotStandIn(limit=LIMIT, window=WINDOW) if hubspot else SalesforceStandIn(limit=LIMIT,
                                                                                                 window=WINDOW)
    stamps: list[float] = []
    answer = standin._answer

    def timed(*args: Any) -> Any:
        reply = answer(*args)
        stamps.append(time.monotonic())
        return reply

    standin._answer = timed
    name = f"{vendor}-{'batched' if batched else 'per-event'}"
    delivered = standin.notes if hubspot else standin.tasks
    with LocalHTTPServer(standin) as server:
        emails = _prefill(ctx, count, "b" if batched else "e", "processed_for_delivery" if hubspot
                          else "returned_to_sender")
        if hubspot:
            standin.add_contacts(emails)
        config = _config(ctx.work, f"batching-{name}", ctx.redis.url, server.url, batched, hubspot)
        proc = Proc(f"worker-batching-{name}", python("-m", "postrelay.cli", "worker", "--config", str(config)),
                    ctx.logs, {"POSTRELAY_LOG_LEVEL": "WARNING"}).start()
        try:
            deadline = time.monotonic() + timeout
            while len(delivered) < count and time.monotonic() < deadline:
                if not proc.alive():
                    raise RuntimeError(f"postrelay worker exited: {proc.log_tail()}")
                time.sleep(0.2)
            time.sleep(1.0)  # anything sent twice would arrive now
            cpu = proc.cpu_seconds()
        finally:
            proc.stop()
    calls, throttled = standin.total_calls, standin.throttled if hubspot else standin.refused
    notes = delivered
    seconds = (stamps[-1] - stamps[0]) if len(stamps) > 1 else 0.0
    return {"events": count, "seconds": round(seconds, 2), "calls": calls, "throttled": throttled,
            "lost": count - len(notes), "duplicated": sum(notes.values()) - len(notes),
            "events_per_call": round(count / max(1, calls), 2), "batch_sizes": standin.batch_sizes[:3],
            "worker_cpu_s": round(cpu, 2),
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
                     f"{batched['calls']} calls: {batched['calls_by_route']}; worker CPU {batched['worker_cpu_s']} s")
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


def sf_rows(batched: dict[str, Any], single: dict[str, Any]) -> list[Row]:
    """The Salesforce rows: drain vs the ideal, records per call, limit refusals, per event extrapolated."""
    n = batched["events"]
    ideal = n / (SF_BATCH * LIMIT / WINDOW) * CALLS_PER_BATCH
    errors = batched["lost"] + batched["duplicated"]
    drain = Row("batching", f"Salesforce drain, {n:,} events (upsert + Task), sObject Collections ({SF_BATCH}, "
                f"{LINGER}), stand-in {LIMIT} req/{WINDOW:g} s", "s", batched["seconds"],
                "ideal events/(batch x rate) x 2 calls per batch", ideal, "≤ 1.5x", errors=errors,
                note=f"lost {batched['lost']}, duplicated {batched['duplicated']} (Tasks at the stand-in); "
                     f"{batched['calls']} calls: {batched['calls_by_route']}; worker CPU {batched['worker_cpu_s']} s")
    drain.met = drain.ratio is not None and drain.ratio <= 1.5 and errors == 0
    per_call = Row("batching", "Salesforce events per API call, batched", "events", batched["events_per_call"],
                   "per event (upsert PATCH + Task POST)", single["events_per_call"], "≥ 50", errors=errors)
    per_call.met = batched["events_per_call"] >= 50
    refused = Row("batching", "Salesforce REQUEST_LIMIT_EXCEEDED refusals, batched", "calls", batched["throttled"],
                  "all calls, batched", batched["calls"], "< 1% of calls", errors=errors,
                  note=f"per event: {single['throttled']} refusals of {single['calls']} calls")
    refused.met = batched["throttled"] < 0.01 * batched["calls"]
    m = single["events"]
    per_event = Row("batching", f"Salesforce drain, per event, extrapolated to {n:,} events", "s",
                    round(single["seconds"] / max(1, m - 1) * n), "batched drain (above)", batched["seconds"], "",
                    errors=single["lost"] + single["duplicated"],
                    note=f"EXTRAPOLATED: measured on {m:,} events in {single['seconds']} s ({single['calls']} calls, "
                         f"lost {single['lost']}, duplicated {single['duplicated']}), x {n / m:,.0f}")
    return [drain, per_call, refused, per_event]


def run(ctx: Context) -> list[Row]:
    """Batched on the profile's count, per event on a smaller one; same stand-in limits; HubSpot, then Salesforce."""
    p = ctx.profile
    batched = measure(ctx, p.batching_events, True, p.batching_timeout)
    single = measure(ctx, p.batching_per_event, False, p.batching_timeout)
    sf_batched = measure(ctx, p.batching_events, True, p.batching_timeout, "salesforce")
    sf_single = measure(ctx, p.batching_per_event, False, p.batching_timeout, "salesforce")
    ctx.raw["batching"] = {"hubspot_batched": batched, "hubspot_per_event": single,
                           "salesforce_batched": sf_batched, "salesforce_per_event": sf_single}
    return rows(batched, single) + sf_rows(sf_batched, sf_single)
