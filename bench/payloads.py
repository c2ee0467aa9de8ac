"""Realistic signed PostGrid JSON webhooks, pre-generated into a request file shared by every driver.

Each line of the file is `<PostGrid-Signature value>\\t<JSON body>\\n`; bodies carry no newline. Every
request has a distinct PostGrid event id (so the receiver's dedupe never short-cuts) and its own mailpiece
(so per-piece ordering never serializes deliveries); a second file with the same prefix and `stage=1`
carries the next status change of the same mailpieces. Signing happens here, ahead of time:
wrk's Lua cannot compute HMAC, and the Python driver must not spend its CPU on it either. PostGrid's
signing tolerance is 8 h, so pre-signed requests stay valid for the whole run.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from postrelay.core.events import event_id

SECRET = "bench-postgrid-secret-0123456789"
WEBHOOK_PATH = "/webhooks/postgrid"
VISIT_TARGET = "https://shop.example.com/offer"  # every bench link's target (bench.toml allows the host)
# `letter.updated` statuses and the canonical type each maps to (receiver/providers/postgrid.py STATUS_MAP).
STATUSES = (("printing", "printed"), ("processed_for_delivery", "mailed"), ("completed", "delivered"))


@dataclass(frozen=True)
class RequestSet:
    """A request file and how its requests were made."""

    path: Path
    count: int
    prefix: str
    stage: int
    mean_body_bytes: int

    def canonical_id(self, index: int) -> str:
        """The canonical event id the receiver derives for request `index` (the outbound `webhook-id`)."""
        return event_id("postgrid", source_event_id(self.prefix, index, self.stage), STATUSES[self.stage][1])


def _order(piece: str, status: str) -> dict[str, Any]:
    """A full PostGrid letter order as PostGrid embeds it in an event's `data` (~1.8 KB of JSON)."""
    return {
        "id": piece,
        "object": "letter",
        "live": True,
        "description": "Spring renewal mailer - wave 3",
        "metadata": {"crm_contact_id": "0031x00000AbCdE", "campaign_id": "spring-24", "segment": "lapsed-90d"},
        "mailingClass": "first_class",
        "sendDate": "2024-05-01T00:00:00.000Z",
        "status": status,
        "to": {
            "id": "contact_pxd7wnnD1xY6H6etKNvjb4", "object": "contact", "live": True,
            "firstName": "Ada", "lastName": "Lovelace", "companyName": "Analytical Engines Ltd",
            "jobTitle": "Countess", "email": "ada@example.com", "phoneNumber": "+14155550100",
            "addressLine1": "145 Mulberry St", "addressLine2": "Apt 2", "city": "San Francisco",
            "provinceOrState": "CA", "postalOrZip": "94107", "countryCode": "US", "addressStatus": "verified",
            "createdAt": "2024-04-30T12:00:00.000Z", "updatedAt": "2024-04-30T12:00:00.000Z",
        },
        "from": {
            "id": "contact_sqF12lZ1VlBb", "object": "contact", "companyName": "PostRelay Inc",
            "addressLine1": "20 Jay St", "addressLine2": "Suite 800", "city": "Brooklyn", "provinceOrState": "NY",
            "postalOrZip": "11201", "countryCode": "US", "addressStatus": "verified",
        },
        "template": "template_8GvDPcBhfP1sGfpQzYpYqN",
        "mergeVariables": {"firstName": "Ada", "offerCode": "SPRING24-7731", "expiry": "2024-06-30"},
        "url": f"https://pg-prod-bucket-1.s3.amazonaws.com/live/{piece}.pdf",
        "addressPlacement": "top_first_page",
        "color": False,
        "doubleSided": True,
        "size": "us_letter",
        "envelope": "standard",
        "pageCount": 2,
        "trackingNumber": None,
        "imbStatus": None,
        "imbDate": None,
        "imbZIPCode": None,
        "express": False,
        "extraService": None,
        "returnEnvelope": None,
        "perforatedPage": None,
        "attachedPDF": None,
        "cancellation": None,
        "sendDateTimezone": "America/New_York",
        "estimatedDeliveryDate": "2024-05-09T00:00:00.000Z",
        "carrierTracking": {"carrier": "USPS", "serviceType": "first_class", "events": []},
        "createdAt": "2024-05-01T09:00:00.000Z",
        "updatedAt": "2024-05-06T14:00:00.000Z",
    }


def source_event_id(prefix: str, index: int, stage: int = 0) -> str:
    """The PostGrid event id of request `index` of a request set."""
    return f"event_{prefix}{stage}_{index:08d}"


def body_for(prefix: str, index: int, stage: int = 0) -> bytes:
    """The JSON body of request `index`: status change number `stage` of mailpiece `index`."""
    piece = f"letter_{prefix}{index:08d}"
    status, _ = STATUSES[stage]
    event = {
        "id": source_event_id(prefix, index, stage),
        "object": "event",
        "type": "letter.updated",
        "live": True,
        "createdAt": "2024-05-06T14:00:00.000Z",
        "data": _order(piece, status),
        "updatedFields": {"status": status},
    }
    return json.dumps(event, separators=(", ", ": ")).encode()


def sign(body: bytes, secret: str = SECRET, ts: int | None = None) -> str:
    """The `PostGrid-Signature` header value for `body`."""
    t = str(int(time.time()) if ts is None else ts)
    mac = hmac.new(secret.encode(), t.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def write_requests(path: Path, count: int, prefix: str, stage: int = 0) -> RequestSet:
    """Write `count` signed requests to `path`."""
    if not 0 <= stage < len(STATUSES):
        raise ValueError(f"stage must be 0..{len(STATUSES) - 1}")
    ts = int(time.time())
    total = 0
    with path.open("wb") as f:
        for i in range(count):
            body = body_for(prefix, i, stage)
            total += len(body)
            f.write(sign(body, ts=ts).encode() + b"\t" + body + b"\n")
    return RequestSet(path, count, prefix, stage, total // max(1, count))


def read_requests(path: Path, offset: int = 0, count: int | None = None) -> Iterator[tuple[str, bytes]]:
    """(signature, body) pairs of `path`, from line `offset`, at most `count` of them."""
    with path.open("rb") as f:
        for i, line in enumerate(f):
            if i < offset:
                continue
            if count is not None and i >= offset + count:
                return
            sig, _, body = line.rstrip(b"\n").partition(b"\t")
            yield sig.decode(), body


def raw_request(host: str, port: int, signature: str, body: bytes, path: str = WEBHOOK_PATH) -> bytes:
    """The exact HTTP/1.1 request bytes for one webhook (keep-alive)."""
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: PostGrid-Webhooks/bench\r\n"
            f"Content-Type: application/json\r\nPostGrid-Signature: {signature}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


def write_visits(path: Path, tokens: list[str], count: int) -> int:
    """Write `count` link visits (`/t/<token>\t<User-Agent>` lines): tokens round-robin, every line its own
    client (a distinct User-Agent), so no visit collapses into an earlier one. Returns `count`."""
    with path.open("w") as f:
        for i in range(count):
            f.write(f"/t/{tokens[i % len(tokens)]}\tMozilla/5.0 (iPhone; bench {i}) Mobile Safari/604.1\n")
    return count


def raw_visit(host: str, port: int, path: str, agent: str) -> bytes:
    """The HTTP/1.1 GET of one link visit (keep-alive)."""
    return (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: {agent}\r\n"
            f"Accept: text/html,*/*\r\n\r\n").encode()
