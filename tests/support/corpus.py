"""A corpus of canonical events from the providers' own normalizers: US and Canadian pieces, return envelopes,
certified letters, engagement (QR visits, Informed Delivery), estimated deliveries, cancellations, failures, the
vendors' published examples; several events per piece, out of order and with duplicates."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from postrelay.core.events import CanonicalEvent
from postrelay.receiver.providers import generic, lob, postalytics, postgrid
from tests.support import payloads as P

VENDOR = Path(__file__).parent.parent / "receiver" / "vendor"
RECEIVED = datetime(2024, 5, 6, 15, 0, 0, 123456, tzinfo=UTC)


def _at(n: int) -> datetime:
    return RECEIVED + timedelta(minutes=n, microseconds=n * 7)


def _pg(payload: dict[str, Any], n: int) -> list[CanonicalEvent]:
    return list(postgrid.normalize(payload, _at(n)).events)


def _lob(payload: dict[str, Any], n: int) -> list[CanonicalEvent]:
    return list(lob.normalize(payload, _at(n)).events)


def postgrid_pieces() -> list[CanonicalEvent]:
    out: list[CanonicalEvent] = []
    ca = P.postgrid_contact(country="CA", postal="M5V 3L9")
    for kind, to, oid in (("letter", None, "letter_us1"), ("postcard", ca, "postcard_ca1"),
                          ("self_mailer", None, "self_mailer_us2"), ("cheque", ca, "cheque_ca2")):
        n = len(out)
        for i, status in enumerate(("ready", "printing", "processed_for_delivery", "completed")):
            out += _pg(P.postgrid_status_update(kind, status, order_id=oid, to=to,
                                                event_id=f"event_{oid}_{status}"), n + i)
        out += _pg(P.postgrid_imb_update(kind, "in_transit", order_id=oid, to=to, event_id=f"event_{oid}_imb"), n + 5)
        out += _pg(P.postgrid_tracker_visit(oid, event_id=f"event_{oid}_visit"), n + 6)
    out += _pg(P.postgrid_status_update("letter", "cancelled", order_id="letter_cancel1",
                                        cancellation={"reason": "user_initiated", "note": "wrong address, é ü"}), 40)
    examples = json.loads((VENDOR / "postgrid_examples.json").read_text())
    for kind in ("letter", "postcard", "self_mailer", "cheque"):
        out += _pg(P.postgrid_event(f"{kind}.created", copy.deepcopy(examples[kind]), event_id=f"event_ex_{kind}"), 50)
    out += _pg(P.postgrid_event("tracker.visited", copy.deepcopy(examples["tracker_visit"]), event_id="event_ex_v"), 51)
    return out


def lob_pieces() -> list[CanonicalEvent]:
    out: list[CanonicalEvent] = []
    scans = [("Mailed", "2024-05-02T18:00:00.000Z"), ("In Transit", "2024-05-03T08:00:00.000Z"),
             ("In Local Area", "2024-05-04T08:00:00.000Z"), ("Processed for Delivery", "2024-05-05T08:00:00.000Z"),
             ("Delivered", "2024-05-06T08:00:00.000Z")]
    types = ["letter.mailed", "letter.in_transit", "letter.in_local_area", "letter.processed_for_delivery",
             "letter.delivered"]
    for pid, country in (("ltr_us_lob1", "UNITED STATES"), ("ltr_ca_lob2", "CANADA")):
        for i in range(len(scans)):
            body = P.lob_mailpiece("letter", pid, country=country, zip_code="94107" if country != "CANADA" else
                                   "M5V 3L9", tracking_events=[P.lob_tracking_event(*scans[i])])
            out += _lob(P.lob_event(types[i], body), i)
    body = P.lob_mailpiece("letter", "ltr_re_lob3", tracking_events=[P.lob_tracking_event(*scans[1])])
    for type_id in ("letter.return_envelope.created", "letter.return_envelope.in_transit",
                    "letter.return_envelope.delivered", "letter.returned_to_sender", "letter.re-routed"):
        out += _lob(P.lob_event(type_id, body), 10)
    cert = P.lob_mailpiece("letter", "ltr_cert_lob4", extra_service="certified",
                           tracking_events=[P.lob_tracking_event("Delivered", scans[4][1], certified=True)])
    out += _lob(P.lob_event("letter.certified.delivered", cert), 11)
    for type_id in ("letter.informed_delivery.email_sent", "letter.informed_delivery.email_opened",
                    "letter.informed_delivery.email_clicked_through", "letter.rejected", "letter.failed"):
        out += _lob(P.lob_event(type_id, P.lob_mailpiece("letter", "ltr_id_lob5", metadata={"n": 1.5, "ok": True})),
                    12)
    import yaml

    example = yaml.safe_load((VENDOR / "lob" / "event_example.yml").read_text())
    out += _lob(example["content"]["application/json"]["example"], 13)
    return out


def other_pieces() -> list[CanonicalEvent]:
    out: list[CanonicalEvent] = []
    for i, etype in enumerate((1, 2, 11, 13, 21)):
        out += list(postalytics.normalize(P.postalytics_event(etype, event_date=f"2024-05-0{i + 2}T13:45:00"),
                                          _at(20 + i)).events)
    out += list(postalytics.normalize(P.postalytics_event(11, mail_id="ca-mail-1", recipient=P.CANADIAN_RECIPIENT,
                                                          meta_fields={"segment": "vip"}), _at(30)).events)
    for etype, extra in (("mailed", {}), ("delivered", {"estimated": True}), ("purl_opened", {"metadata": {
            "campaign": "fall-24", "postrelay": {"x": 1}, "z": [1, 2, {"k": None}]}}),
            ("processed_for_delivery", {"occurred_at": "2024-05-06T12:00:00.5+02:00"})):
        out += list(generic.normalize({"webhook_id": f"msg_{etype},x", "body": P.generic_event(etype, **extra)},
                                      _at(31)).events)
    return out


def corpus() -> list[CanonicalEvent]:
    """Every event, with each piece's events shuffled out of order and a few sent twice."""
    events = postgrid_pieces() + lob_pieces() + other_pieces()
    events = events[::2] + events[1::2]  # out of order within pieces
    return events + events[:7]  # and duplicates
