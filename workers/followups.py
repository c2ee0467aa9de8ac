"""Delivery-timed follow-up actions: schedule on a trigger, cancel on a later event, fire once when due.

A pending follow-up is identified by `<rule>|<source>|<mailpiece id>` — one per rule and piece, so a
duplicate or repeated trigger never schedules twice — and lives in Redis (it survives every restart):
- `pr:fu:due` — sorted set of pending ids scored by due time (the scheduler polls only what is due);
- `pr:fu:{id}` — its record (rule, trigger event, due time, estimated flag);
- `pr:fu:piece:{source:piece}` — the piece's pending ids (cancellation and `followups list --mailpiece`);
- `pr:fu:fired:{id}` — set once it fired: it never fires or schedules again.
The piece's event types (`unless` checks) are read from the mailpiece store (`rt.pieces`); when that is another
Redis (a cluster) they are read before the schedule script and passed to it, and checked again when firing.
Firing creates an ordinary (unordered) delivery to the rule's `do` destination, tagged with the rule name and
due at once (the worker's due-time loop runs it), so failures reuse the relay's retries and dead letters. A
follow-up due while everything was down fires at the next poll after start-up, marked `late`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import UTC, datetime

from redis.client import Pipeline

from postrelay.core import keys, stats
from postrelay.core.config import Config, FollowupConfig
from postrelay.core.durations import Delay, parse_delay
from postrelay.core.events import CanonicalEvent, EventType
from postrelay.core.replies import scored
from postrelay.core.scripts import lua
from postrelay.core.stores import deliveries
from postrelay.core.stores import followups as followups_store
from postrelay.core.stores.piece_codec import CODE
from postrelay.core.timeline import seen_types
from postrelay.workers import calendar, mailings
from postrelay.workers.routing import matches
from postrelay.workers.runtime import Runtime

log = logging.getLogger("postrelay.followups")
DUE = keys.FOLLOWUPS_DUE
LATE_AFTER = 60.0
ESTIMABLE = frozenset({EventType.IN_TRANSIT, EventType.IN_LOCAL_AREA, EventType.PROCESSED_FOR_DELIVERY,
                       EventType.DELIVERED})

record_key = keys.followup
fired_key = keys.followup_fired
piece_key = keys.followup_piece
followup_id = followups_store.followup_id
cancel_in = followups_store.cancel_in


def is_scanless(event: CanonicalEvent, config: Config) -> bool:
    """True when this piece's provider will never send in-stream scans (e.g. Canada Post)."""
    est = config.followup_estimates
    country = event.field("country")
    if event.source in est.scanless_sources:
        return True
    return bool(country) and country.upper() not in {c.upper() for c in est.scan_countries}


def transit_delay(event: CanonicalEvent, config: Config) -> Delay:
    """Expected time from `mailed` to delivery for the piece's country and mailing class."""
    transit = config.followup_estimates.transit
    country = (event.field("country") or "").upper()
    mclass = event.field("mailpiece.mailing_class") or ""
    for key in (f"{country}/{mclass}", country, "*"):
        if key in transit:
            return parse_delay(transit[key])
    return Delay(business_days=5)


def due_time(rule: FollowupConfig, event: CanonicalEvent, start: datetime) -> datetime:
    """When `rule` fires for a trigger at `start` (business days per the rule's or the piece's calendar)."""
    cal = calendar.calendar_for(event.field("country"), rule.calendar)
    return calendar.due_at(start, parse_delay(rule.delay), cal)


class FollowupHandler:
    """Dispatcher handler: cancels pending follow-ups on `unless` events and schedules on triggers."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.rules = rt.config.followups

    def stage(self, pipe: Pipeline, events: Sequence[CanonicalEvent]) -> None:
        """Add cancellations and schedules for `events` to the ack transaction."""
        planned: list[tuple[FollowupConfig, CanonicalEvent, str, datetime, bool]] = []
        for event in events:
            for rule in self.rules:
                fid = followup_id(rule.name, *event.piece_key)
                if event.type.value in rule.unless:
                    cancel_in(pipe, fid, *event.piece_key)
                    continue
                trigger = self._trigger(rule, event)
                if trigger is not None:
                    start, estimated = trigger
                    planned.append((rule, event, fid, due_time(rule, event, start), estimated))
        seen = self._seen_types([event for rule, event, *_ in planned if rule.unless])
        for rule, event, fid, due, estimated in planned:
            self._stage_schedule(pipe, rule, event, fid, due, estimated, seen.get(event.piece_key, []))

    def _seen_types(self, events: Sequence[CanonicalEvent]) -> dict[tuple[str, str], list[str]]:
        """Each piece's event types, read from the mailpiece store when it is not the queue Redis (else {}:
        the schedule script reads them itself)."""
        pieces = sorted({e.piece_key for e in events})
        if not pieces or self.rt.pieces is self.rt.redis:
            return {}
        # a cluster pipeline sends each node its pieces' reads
        return {piece: sorted(types) for piece, types in seen_types(self.rt.piece_store, pieces).items()}

    def _trigger(self, rule: FollowupConfig, event: CanonicalEvent) -> tuple[datetime, bool] | None:
        """(trigger time, estimated) when `event` triggers `rule`, else None."""
        if rule.where and not matches(event, ["*"], rule.where):
            return None
        if event.type.value == rule.after:
            return event.occurred_at, False
        if (event.type is EventType.MAILED and EventType(rule.after) in ESTIMABLE
                and is_scanless(event, self.rt.config)):
            cal = calendar.calendar_for(event.field("country"), rule.calendar)
            return calendar.due_at(event.occurred_at, transit_delay(event, self.rt.config), cal), True
        return None

    def _stage_schedule(self, pipe: Pipeline, rule: FollowupConfig, event: CanonicalEvent, fid: str,
                        due: datetime, estimated: bool, seen: list[str]) -> None:
        data = json.dumps({"rule": rule.name, "do": rule.do, "event": event.model_dump(mode="json"),
                           "estimated": estimated, "scheduled_for": due.isoformat()})
        src, pid = event.piece_key
        lua("followup_schedule")(
            pipe, keys=[record_key(fid), DUE, piece_key(src, pid), fired_key(fid), keys.piece_types(src, pid),
                        keys.piece(src, pid)],
            args=[fid, due.timestamp(), int(estimated), json.dumps(rule.unless), data, json.dumps(seen),
                  "".join(CODE[t] for t in rule.unless)])


class Scheduler:
    """Fires due follow-ups: claims them with a lease, then creates their deliveries in one transaction."""

    def __init__(self, rt: Runtime, batch: int = 500) -> None:
        self.rt = rt
        self.batch = batch

    def run_once(self) -> int:
        """Fire everything due now; returns how many fired."""
        rt = self.rt
        now = rt.clock()
        claimed = lua("due_claim")(rt.redis, keys=[DUE], args=[now, rt.config.delivery.lease, self.batch])
        fired = 0
        for i in range(0, len(claimed), 2):
            fid, due = claimed[i].decode(), float(claimed[i + 1])
            fired += self._fire(fid, due, now)
        return fired

    def tick(self, longest: float = 1.0) -> float:
        """Fire what is due, then return how long to sleep: until the next follow-up is due, at most `longest`.

        Sleeping until the earliest due time instead of polling every second fires follow-ups within
        milliseconds of their due time (one ZRANGE per tick; a follow-up scheduled meanwhile by another
        process waits at most `longest`).
        """
        fired = self.run_once()
        if fired >= self.batch:
            return 0.0
        head = scored(self.rt.redis.zrange(DUE, 0, 0, withscores=True))
        if not head:
            return longest
        return min(longest, max(0.005, head[0][1] - self.rt.clock()))

    def _fire(self, fid: str, due: float, now: float) -> int:
        rt = self.rt
        raw = rt.redis.hget(record_key(fid), "data")
        _, source, piece_id = fid.split("|", 2)
        if raw is None or rt.redis.exists(fired_key(fid)):
            pipe = rt.redis.pipeline()
            cancel_in(pipe, fid, source, piece_id)
            pipe.execute()
            return 0
        data = json.loads(raw)
        rule = next((r for r in rt.config.followups if r.name == data["rule"]), None)
        event = CanonicalEvent.model_validate(data["event"])
        seen = seen_types(rt.piece_store, [(source, piece_id)])[(source, piece_id)]
        pipe = rt.redis.pipeline(transaction=True)
        cancel_in(pipe, fid, source, piece_id)
        if rule is None or seen & set(rule.unless):
            pipe.execute()  # rule removed from the config, or cancelled by an event that raced the schedule
            return 0
        extra = {"followup": rule.name, "trigger_event_id": event.id, "trigger_type": event.type.value,
                 "estimated": bool(data["estimated"]), "late": now - due > LATE_AFTER,
                 "scheduled_for": data["scheduled_for"], "fired_at": datetime.fromtimestamp(now, UTC).isoformat()}
        if mailings.is_mailer(rt, rule.do):  # one mailing path: stored before the fired marker, found again on re-fire
            extra["mailing_id"] = mailings.enqueue_followup(rt, fid, rule.do, event, extra)
        else:
            deliveries.stage(pipe, rule.do, event, now=now, due=now, tag=rule.name, extra=extra, ordered=False)
        pipe.set(fired_key(fid), json.dumps(extra), ex=int(rt.config.delivery.done_retention))
        stats.observe(pipe, "followup_lag", now - due)
        pipe.execute()
        log.info("follow-up fired", extra={"followup": fid, "late": extra["late"], "event_id": event.id,
                                           "mailpiece_id": piece_id, "source": source, "destination": rule.do,
                                           "lag_s": round(now - due, 1)})
        return 1
