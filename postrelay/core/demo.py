"""`postrelay demo`: a realistic data set for the console, generated and stored in seconds.

A few campaigns of postcards and letters from PostGrid, Lob and Postalytics, spread over the last weeks: US
pieces with USPS scans (in transit, in the local area, out for delivery, delivered), Canadian pieces that go
from mailed straight to an estimated delivery (Canada Post sends no scans), a few percent returned or
cancelled, pURL / QR visits and completions, and two destinations: `crm`, which took every event, and `erp`,
which is failing (its circuit open, its returned-mail deliveries dead-lettered). The events are applied with
the worker's own timeline script (so the indexes are built as in production); the deliveries and dead
letters are written through the stores. Deterministic for a given seed.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from postrelay.core import keys, stats
from postrelay.core.config import Config
from postrelay.core.events import CanonicalEvent, Location, Mailpiece, Recipient
from postrelay.core.stores import deliveries, dlq
from postrelay.core.stores.circuit import CircuitBreaker
from postrelay.core.timeline import TimelineWriter

FIRST = ["Ada", "Grace", "Alan", "Katherine", "Linus", "Margaret", "Dennis", "Barbara", "Ken", "Frances", "Donald",
         "Radia", "Edsger", "Hedy", "Tim", "Sophie", "Guido", "Anita", "John", "Mary", "Chloé", "José", "Zoë"]
LAST = ["Lovelace", "Hopper", "Turing", "Johnson", "Torvalds", "Hamilton", "Ritchie", "Liskov", "Thompson",
        "Allen", "Knuth", "Perlman", "Dijkstra", "Lamarr", "Berners-Lee", "Wilson", "van Rossum", "Borg",
        "O'Brien & <Sons>", "Tremblay", "Gagnon", "Roy", "Côté"]
US_ZIPS = ["10013", "94107", "60601", "30303", "73301", "98101", "02110", "80202", "33131", "55401", "19103"]
CA_CITIES = [("Toronto", "ON", "M5V 2T6"), ("Montréal", "QC", "H2X 1Y4"), ("Vancouver", "BC", "V6B 1A1"),
             ("Calgary", "AB", "T2P 1J9"), ("Ottawa", "ON", "K1P 5G4")]
SOURCES = ["postgrid", "lob", "postalytics"]
# (stage, days after creation): a US piece's USPS journey; Canada skips from mailed to an estimated delivery
US_STEPS = [("created", 0.0), ("printed", 0.8), ("mailed", 1.6), ("in_transit", 2.4), ("in_local_area", 4.1),
            ("processed_for_delivery", 5.0), ("delivered", 5.4)]
CA_STEPS = [("created", 0.0), ("printed", 0.9), ("mailed", 1.8), ("delivered", 6.5)]


@dataclass(frozen=True)
class Plan:
    """How much to make: `pieces` over `campaigns` campaigns, created during the last `days` days."""

    pieces: int = 3000
    campaigns: int = 4
    days: int = 35
    seed: int = 14
    canada_share: float = 0.25


def campaign_names(n: int) -> list[str]:
    """Readable campaign ids (`spring-postcards`, … and numbered ones beyond the named few)."""
    named = ["spring-postcards", "winback-letters", "canada-launch", "holiday-cards"]
    return named[:n] + [f"campaign-{i:03d}" for i in range(len(named), n)]


def _event(rng: random.Random, source: str, piece: str, etype: str, at: datetime, campaign: str, country: str,
           name: str, email: str, kind: str, zip_code: str | None, estimated: bool = False) -> CanonicalEvent:
    city, region, postal = (rng.choice(CA_CITIES) if country == "CA" else ("", "", zip_code or ""))
    return CanonicalEvent.build(
        source=source, source_event_id=f"demo_{piece}_{etype}", type=etype, occurred_at=at,
        received_at=at + timedelta(seconds=rng.randint(5, 900)),
        mailpiece=Mailpiece(id=piece, kind=kind, country=country, campaign_id=campaign, mailing_class="first_class"),
        location=Location(zip=zip_code if country == "US" and etype not in ("created", "printed") else None),
        recipient=Recipient(name=name, email=email, city=city or None, region=region or None,
                            postal_code=postal or None, country=country),
        metadata={"campaign": campaign, "postrelay": {"demo": True}}, estimated=estimated)


def piece_events(rng: random.Random, n: int, campaign: str, now: datetime, plan: Plan) -> list[CanonicalEvent]:
    """One piece's events up to `now`: its journey, maybe a return or a cancellation, maybe visits."""
    country = "CA" if campaign == "canada-launch" or rng.random() < plan.canada_share / 2 else "US"
    source = rng.choice(SOURCES)
    kind = "letter" if "letter" in campaign else "postcard"
    piece = f"{'ltr' if kind == 'letter' else 'pc'}_{campaign[:3]}{n:06d}"
    first, last = rng.choice(FIRST), rng.choice(LAST)
    name, email = f"{first} {last}", f"{first}.{last.split()[0]}.{n}@example.com".lower().replace("'", "")
    created = now - timedelta(days=0.2 + (plan.days - 0.2) * rng.random() ** 1.6)  # more of them recent
    zip_code = rng.choice(US_ZIPS)
    out: list[CanonicalEvent] = []

    def add(etype: str, days: float, estimated: bool = False) -> bool:
        at = created + timedelta(days=days + rng.uniform(-0.15, 0.3))
        if at > now:
            return False
        out.append(_event(rng, source, piece, etype, at, campaign, country, name, email, kind, zip_code, estimated))
        return True

    if rng.random() < 0.01:
        add("created", 0.0)
        add("cancelled", 0.3)
        return out
    fate = rng.random()
    steps = CA_STEPS if country == "CA" else US_STEPS
    for etype, days in steps:
        if etype == "in_local_area" and rng.random() < 0.2:
            continue  # USPS does not scan every step
        if fate < 0.035 and etype in ("in_local_area", "processed_for_delivery", "delivered"):
            add("returned_to_sender", days + 3.0)
            return out
        if not add(etype, days * rng.uniform(0.9, 1.25), estimated=(etype == "delivered" and country == "CA")):
            return out
    delivered_at = out[-1].occurred_at
    if rng.random() < 0.18:
        visit = (delivered_at - created).total_seconds() / 86400 + rng.uniform(0.3, 4)
        if add("purl_opened", visit) and rng.random() < 0.3:
            add("purl_completed", visit + rng.uniform(0.01, 0.5))
    return out


def generate(plan: Plan, now: datetime) -> Iterator[list[CanonicalEvent]]:
    """Every piece's events, one list per piece."""
    rng = random.Random(plan.seed)
    names = campaign_names(plan.campaigns)
    weights = [1.0 / (1 + i % 7) for i in range(len(names))]
    for n in range(plan.pieces):
        yield piece_events(rng, n, rng.choices(names, weights)[0], now, plan)


def _minute_counts(pipe: Any, events: list[CanonicalEvent], now: float) -> None:
    """The overview's events-per-minute counters for what "arrived" in the last hours (by received time)."""
    by_minute: dict[int, list[CanonicalEvent]] = defaultdict(list)
    for e in events:
        t = e.received_at.timestamp()
        if now - stats.SOURCES_TTL < t <= now:
            by_minute[int(t // 60)].append(e)
    for minute, batch in by_minute.items():
        stats.count_events(pipe, batch, minute * 60.0)


def _deliveries(pipe: Any, config: Config, events: list[CanonicalEvent], now: float) -> list[CanonicalEvent]:
    """`crm` took every event (done markers); returns the events `erp` (returned mail) failed on."""
    ttl = int(config.delivery.done_retention)
    failed = []
    for e in events:
        done = json.dumps({"remote_id": f"crm_{e.id[4:16]}", "at": e.received_at.isoformat()})
        pipe.set(keys.delivery_done(deliveries.delivery_key("crm", e.id)), done, ex=ttl)
        stats.count_delivery(pipe, "crm", "ok")
        if e.type.value == "returned_to_sender":
            failed.append(e)
    return failed


def _dead_letters(r: Any, config: Config, failed: list[CanonicalEvent], now: float) -> None:
    """`erp` refused every connection: dead letters with their attempts, and an open circuit."""
    pipe = r.pipeline(transaction=False)
    for e in failed:
        at = e.received_at.timestamp()
        attempts = [{"at": datetime.fromtimestamp(at + i * 30, UTC).isoformat(), "outcome": "retry", "status": None,
                     "detail": "ConnectError: [Errno 111] Connection refused", "duration_ms": 1.2} for i in range(3)]
        dlq.add(pipe, deliveries.delivery_key("erp", e.id), {"event": e.model_dump_json()},
                "max attempts (3) reached; last: ConnectError: [Errno 111] Connection refused", attempts,
                at + 90)
        stats.count_delivery(pipe, "erp", "retry")
        stats.count_delivery(pipe, "erp", "dead")
    pipe.execute()
    breaker = CircuitBreaker(r, config.delivery)
    for _ in range(max(1, config.delivery.circuit_threshold)):
        breaker.failure("erp", now, "ConnectError: [Errno 111] Connection refused")


def load(pieces: Any, queue: Any, config: Config, plan: Plan, now: datetime | None = None,
         progress: Callable[[int, int], None] | None = None,
         on_events: Callable[[list[CanonicalEvent]], None] | None = None) -> dict[str, int]:
    """Generate and store the data set; `on_events` sees every applied batch (the CLI schedules follow-ups)."""
    now = now or datetime.now(UTC)
    writer = TimelineWriter(pieces, config.server.timeline_retention, index=queue)
    counts = {"pieces": 0, "events": 0, "dead_letters": 0}
    batch: list[CanonicalEvent] = []
    failed: list[CanonicalEvent] = []

    def flush() -> None:
        batch.sort(key=lambda e: e.occurred_at)
        applied = writer.apply_many(batch)
        pipe = queue.pipeline(transaction=False)
        _minute_counts(pipe, applied, now.timestamp())
        if "crm" in config.destinations:
            failed.extend(_deliveries(pipe, config, applied, now.timestamp()))
        pipe.execute()
        if on_events is not None:
            on_events(applied)
        counts["events"] += len(batch)
        batch.clear()

    for events in generate(plan, now):
        batch.extend(events)
        counts["pieces"] += 1
        if len(batch) >= 2000:
            flush()
            if progress is not None:
                progress(counts["pieces"], plan.pieces)
    if batch:
        flush()
    if progress is not None:
        progress(counts["pieces"], plan.pieces)
    if "erp" in config.destinations:
        _dead_letters(queue, config, failed, now.timestamp())
        counts["dead_letters"] = len(failed)
    return counts
