"""The mailings creator: turns queued mailings into provider pieces, exactly once.

A worker loop claims due mailings (`postrelay.core.stores.mailings.claim`: the claim is a lease, so a killed
worker's mailing is claimed again when it expires) and for each one:
0. a mailing with a `link` gets its tracking link (`postrelay.core.mailing_links.ensure`: minted once per
   mailing and recorded with it atomically), whose URLs become the merge variables `purl` and `qr_url`;
1. a dry run stores the rendered provider request and ends in `dry_run` (nothing is sent, no cap is used);
2. reserves a slot in today's caps (`[mailings] max_per_day`, the trigger's `max_per_day`), atomically in
   Redis, once per mailing: a full cap ends in `failed` with the cap's name;
3. from the second attempt on, asks the provider for a piece carrying `postrelay_mailing = <id>` (an earlier
   attempt may have created it and died before recording it) and adopts it;
4. creates the piece with `Idempotency-Key: <mailing id>`, binds the link to it, and records `created` with
   the provider's id.
Network errors, timeouts, 408/425/429 and 5xx retry with the relay's backoff (never before `Retry-After`,
until `[delivery] max_attempts`/`max_age`); any other 4xx — an address the provider rejects — ends in
`failed` with the provider's reason, and gives its cap slot back.

Follow-ups whose `do` is a postgrid or lob destination become mailings here too (`enqueue_followup`): one
mailing path for the API, triggers and mail events.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from pydantic import ValidationError

from postrelay.adapters._mailing import Mailer
from postrelay.adapters._payload import render_fields
from postrelay.adapters.base import Outcome
from postrelay.core import mailing_links
from postrelay.core.config_mailings import LINK_FIELDS
from postrelay.core.events import CanonicalEvent
from postrelay.core.mailing import (
    MAILER_TYPES,
    PROVIDER_METADATA_KEYS,
    Address,
    LinkRequest,
    MailingRequest,
    added_keys,
    mailing_id,
    stored_request,
    with_link,
)
from postrelay.core.stores import mailings as store
from postrelay.core.stores.links import LinkError
from postrelay.workers.policy import next_attempt
from postrelay.workers.runtime import Runtime

log = logging.getLogger("postrelay.mailings")


class Creator:
    """Claims due mailings and creates their pieces."""

    def __init__(self, rt: Runtime, batch: int = 10) -> None:
        self.rt = rt
        self.batch = batch

    def run_once(self) -> int:
        """Work on every mailing due now (in batches); returns how many were handled."""
        rt = self.rt
        done = 0
        while True:
            ids = store.claim(rt.redis, rt.clock(), rt.config.delivery.lease, self.batch)
            for mid in ids:
                try:
                    self.process(mid)
                except Exception:  # a bug must not stop the loop; the claim expires and it is tried again
                    log.exception("mailing %s failed unexpectedly; retried after the lease", mid)
                done += 1
            if len(ids) < self.batch:
                return done

    def tick(self, longest: float = 1.0) -> float:
        """Work on what is due, then sleep until the next mailing is due (at most `longest`)."""
        self.run_once()
        head = self.rt.redis.zrange(store.DUE, 0, 0, withscores=True)
        if not head:
            return longest
        return min(longest, max(0.01, float(head[0][1]) - self.rt.clock()))

    def process(self, mid: str) -> str:
        """One attempt at one claimed mailing; returns its status afterwards."""
        rt = self.rt
        rec = store.raw_record(rt.redis, mid)
        if rec.get("status") != "queued":
            store.update(rt.redis, mid, {})  # expired or already finished: leave the queue
            return rec.get("status", "expired")
        adapter = rt.adapters.get(rec["provider"])
        if adapter is None or not hasattr(adapter, "create_mailing"):
            return self._fail(mid, rec, f"provider {rec['provider']!r} is no longer a postgrid or lob destination")
        mailer: Mailer = adapter  # type: ignore[assignment]
        try:
            request = stored_request(json.loads(rec["request"]))
        except (ValueError, ValidationError) as exc:
            return self._fail(mid, rec, f"the stored request is not valid: {exc}")
        link: dict[str, str] = {}
        if request.link is not None:
            try:
                link = mailing_links.ensure(rt.redis, rt.config.links, mid, request, rt.clock())
            except LinkError as exc:
                return self._fail(mid, rec, f"the tracking link cannot be minted: {exc}")
            except mailing_links.MailingGone:
                return "expired"
            request = with_link(request, link)
        if rec.get("dry_run") == "1":
            rendered = json.dumps(mailer.mailing_body(request, mid))
            store.update(rt.redis, mid, {"status": "dry_run", "rendered": rendered}, now=rt.clock())
            log.info("mailing dry run rendered", extra={"mailing_id": mid, "provider": rec["provider"]})
            return "dry_run"
        trigger = rec.get("trigger") or None
        verdict = store.reserve(rt.redis, mid, trigger, rt.clock(), rt.config.mailings.max_per_day,
                                self._trigger_cap(trigger))
        if verdict != "ok":
            limit = rt.config.mailings.max_per_day if verdict == "max_per_day" else self._trigger_cap(trigger)
            return self._fail(mid, rec, f"{verdict} reached ({limit} pieces per UTC day): not sent")
        if int(rec.get("attempts") or 1) > 1:
            found = mailer.find_mailing(request, mid)
            if isinstance(found, str):
                return self._created(mid, rec, Outcome.success(remote_id=found), link, found_again=True)
            if isinstance(found, Outcome):
                return self._outcome(mid, rec, found, link)
        return self._outcome(mid, rec, mailer.create_mailing(request, mid), link)

    def _trigger_cap(self, trigger: str | None) -> int:
        rule = next((t for t in self.rt.config.triggers if t.name == trigger), None)
        return rule.max_per_day if rule else 0

    def _outcome(self, mid: str, rec: dict[str, str], outcome: Outcome, link: dict[str, str]) -> str:
        if outcome.ok:
            return self._created(mid, rec, outcome, link)
        rt = self.rt
        if outcome.status == "permanent":
            store.release(rt.redis, mid, rec.get("trigger") or None)
            return self._fail(mid, rec, outcome.detail, outcome.http_status)
        attempts = int(rec.get("attempts") or 1)
        now = rt.clock()
        decision = next_attempt(rt.config.delivery, attempts, now - float(rec.get("created_ts") or now),
                                outcome.retry_after)
        if decision.dead:
            return self._fail(mid, rec, f"{decision.reason}; last: {outcome.detail}", outcome.http_status)
        store.update(rt.redis, mid, {"last_error": outcome.detail, "http_status": outcome.http_status,
                                     "next_attempt_at": store.iso(now + decision.delay)},
                     due=now + decision.delay, now=now)
        log.info("mailing retry scheduled", extra={"mailing_id": mid, "attempt": attempts,
                                                   "delay_s": round(decision.delay, 1), "detail": outcome.detail})
        return "queued"

    def _created(self, mid: str, rec: dict[str, str], outcome: Outcome, link: dict[str, str],
                 found_again: bool = False) -> str:
        if link and outcome.remote_id:  # bound before `created` is recorded: a crash in between binds again
            source = rec.get("provider_type") or str(getattr(self.rt.adapters.get(rec["provider"]), "type", ""))
            if not mailing_links.bind(self.rt.redis, link, source, outcome.remote_id, self.rt.clock()):
                log.warning("mailing link not bound", extra={"mailing_id": mid, "token": link.get("token"),
                                                             "piece_id": outcome.remote_id})
        fields: dict[str, Any] = {"status": "created", "piece_id": outcome.remote_id, "http_status": outcome.http_status,
                                  "next_attempt_at": None, "found_again": "1" if found_again else "0"}
        store.update(self.rt.redis, mid, fields, now=self.rt.clock())
        log.info("mailing created", extra={"mailing_id": mid, "piece_id": outcome.remote_id,
                                           "found_again": found_again})
        return "created"

    def _fail(self, mid: str, rec: dict[str, str], reason: str, http_status: int | None = None) -> str:
        store.update(self.rt.redis, mid, {"status": "failed", "reason": reason, "http_status": http_status,
                                          "next_attempt_at": None}, now=self.rt.clock())
        log.warning("mailing failed", extra={"mailing_id": mid, "provider": rec.get("provider"), "reason": reason})
        return "failed"


def followup_request(rt: Runtime, destination: str, event: CanonicalEvent,
                     extra: dict[str, Any]) -> MailingRequest | str:
    """The mailing a follow-up to a mailer destination sends: to the event's recipient, the piece's CRM keys
    in its metadata (plus links to the first piece), the event's metadata as merge variables; or a reason."""
    adapter = rt.adapters.get(destination)
    kind = getattr(getattr(adapter, "settings", None), "kind", None)
    if kind is None:
        return f"destination {destination!r} has no `kind` (postcard or letter)"
    r = event.recipient
    fallback = getattr(adapter.settings, "fallback_name", None) or "Current Resident"  # type: ignore[union-attr]
    crm = {k: v for k, v in event.metadata.items() if k != "postrelay" and not k.startswith("postrelay")
           and isinstance(v, str | int | float | bool) and len(k) <= 40 and len(str(v)) <= 500
           and not any(c in k + str(v) for c in '"\\')}
    if "campaign_id" in crm:  # first, so trimming never drops it (it would be added again as an extra key)
        crm = {"campaign_id": crm["campaign_id"], **crm}
    link = followup_link(rt, event, extra)
    campaign = event.mailpiece.campaign_id
    followup = {"postrelay_previous_mailpiece": event.mailpiece.id,  # links the piece to the first one
                "postrelay_followup": str(extra.get("followup") or "")}
    room = PROVIDER_METADATA_KEYS - len(followup) - len(added_keys(crm, campaign, bool(link)))
    variables = {k: v for k, v in event.metadata.items() if k != "postrelay"}
    unusable = set(adapter.unusable_merge_variables(variables))  # type: ignore[union-attr]
    try:
        to = Address(name=r.name or fallback, address_line1=r.address_line1 or "", address_line2=r.address_line2,
                     city=r.city, region=r.region,
                     postal_code=r.postal_code, country=r.country or event.mailpiece.country or "", email=r.email,
                     phone=r.phone)
        request = MailingRequest(provider=destination, kind=kind, to=to, metadata=dict(list(crm.items())[:room]),
                                 merge_variables={k: v for k, v in variables.items() if k not in unusable},
                                 campaign_id=campaign)
        if link:
            request = request.model_copy(update={"link": LinkRequest.model_validate(link)})
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(map(str, err["loc"]))
        if err["loc"] and err["loc"][0] in LINK_FIELDS:
            return f"the follow-up's link is not valid: link.{loc}: {err['msg']}"
        return f"the event's recipient cannot be mailed: {loc}: {err['msg']}"
    request = request.with_defaults(adapter.mailing_defaults())  # type: ignore[union-attr]
    request.metadata.update(followup)
    return request


def followup_link(rt: Runtime, event: CanonicalEvent, extra: dict[str, Any]) -> dict[str, Any]:
    """The rule's `link` table rendered from the event (its JSON fields, `event_id` and the follow-up facts)."""
    rule = next((r for r in rt.config.followups if r.name == extra.get("followup")), None)
    if rule is None or not rule.link:
        return {}
    data = {**event.model_dump(mode="json"), "event_id": event.id, **extra}
    return render_fields(rule.link, data)


def enqueue_followup(rt: Runtime, fid: str, destination: str, event: CanonicalEvent, extra: dict[str, Any]) -> str:
    """Create the mailing of a fired follow-up (id from the follow-up id: firing twice finds the same one)."""
    mid = mailing_id("followup", fid)
    now = rt.clock()
    built = followup_request(rt, destination, event, extra)
    ptype = rt.config.destinations[destination].type
    if isinstance(built, str) or built.missing():
        reason = built if isinstance(built, str) else built.missing()
        request_json = {"provider": destination, "kind": "postcard", "error": reason}
        fields = store.new_fields(mid, request_json, "", f"followup:{extra.get('followup')}", now,
                                  provider_type=ptype, status="failed")
        fields["reason"] = str(reason)
    else:
        fields = store.new_fields(mid, built.as_json(), built.fingerprint(), f"followup:{extra.get('followup')}", now,
                                  provider_type=ptype)
    store.create(rt.redis, fields, now, rt.config.mailings.retention)
    return mid


def is_mailer(rt: Runtime, destination: str) -> bool:
    """True when a destination creates mailings (postgrid, lob)."""
    dest = rt.config.destinations.get(destination)
    return dest is not None and dest.type in MAILER_TYPES
