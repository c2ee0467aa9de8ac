"""Signed provider webhooks for load and fault tests, and a sender that retries like a provider.

`make_events(n, pieces)` builds a mix of Standard Webhooks (generic), Lob and PostGrid (JSON-signed) events,
each knowing the canonical event id, piece and type the receiver will derive from it. `Sender` posts them
from a few threads at a bounded rate and retries on 503, 5xx, timeouts and refused/reset connections (a
provider retries on any non-200), re-signing each attempt with a fresh timestamp. Every loop is bounded in
attempts and time.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx

from postrelay.core.events import event_id
from tests.support import payloads, signing

LIFECYCLE = ["created", "printed", "mailed", "in_transit", "in_local_area", "processed_for_delivery", "delivered"]
LOB_ACTIONS = {"created": "created", "mailed": "mailed", "in_transit": "in_transit", "in_local_area": "in_local_area",
               "processed_for_delivery": "processed_for_delivery", "delivered": "delivered"}
PG_STATUS = {"created": "ready", "printed": "printing", "mailed": "processed_for_delivery", "delivered": "completed"}


@dataclass
class Secrets:
    """The inbound secrets the receiver under test is configured with."""

    generic: str = signing.make_whsec(b"fault-generic")
    lob: str = "lob_fault_secret_5c1e9a0b7d"
    postgrid: str = "pg_fault_secret_8a2f4c6e1b3d5a7c"

    def sources(self) -> dict[str, dict[str, list[str]]]:
        """The `[sources]` table."""
        return {"generic": {"secrets": [self.generic]}, "lob": {"secrets": [self.lob]},
                "postgrid": {"secrets": [self.postgrid]}}


@dataclass
class Outgoing:
    """One provider webhook and the canonical event it must become."""

    source: str
    piece: str
    type: str
    source_event_id: str
    body: bytes
    path: str
    sign: Callable[[bytes, float], dict[str, str]]

    @property
    def canonical_id(self) -> str:
        """The receiver's deterministic canonical id for this event."""
        return event_id(self.source, self.source_event_id, self.type)


def _generic(i: int, piece: str, etype: str, secrets: Secrets, tag: str) -> Outgoing:
    msg_id = f"msg_{tag}_{i:06d}"
    body = signing.to_bytes(payloads.generic_event(etype, piece_id=piece, occurred_at=f"2024-05-06T12:{i % 60:02d}:00Z"))

    def sign(b: bytes, now: float) -> dict[str, str]:
        return signing.standard_webhooks_headers(b, secrets.generic, msg_id, now)

    return Outgoing("generic", piece, etype, msg_id, body, "/webhooks/generic", sign)


def _lob(i: int, piece: str, etype: str, secrets: Secrets, tag: str) -> Outgoing:
    action = LOB_ACTIONS[etype]
    evt = f"evt_{tag}_{i:06d}"
    scan = payloads.LOB_SCAN_NAMES.get(action)
    scans = [payloads.lob_tracking_event(scan, f"2024-05-06T1{i % 10}:00:00.000Z")] if scan else []
    body = signing.to_bytes(payloads.lob_event(f"letter.{action}", payloads.lob_mailpiece("letter", piece,
                                                                                            tracking_events=scans),
                                               event_id=evt))

    def sign(b: bytes, now: float) -> dict[str, str]:
        return signing.lob_headers(b, secrets.lob, now)

    return Outgoing("lob", piece, etype, evt, body, "/webhooks/lob", sign)


def _postgrid(i: int, piece: str, etype: str, secrets: Secrets, tag: str) -> Outgoing:
    evt = f"event_{tag}_{i:06d}"
    body = signing.to_bytes(payloads.postgrid_status_update("letter", PG_STATUS[etype], order_id=piece, event_id=evt))

    def sign(b: bytes, now: float) -> dict[str, str]:
        return {"Content-Type": "application/json", "PostGrid-Signature": signing.postgrid_signature(b, secrets.postgrid,
                                                                                                     now)}

    return Outgoing("postgrid", piece, etype, evt, body, "/webhooks/postgrid", sign)


def make_events(n: int, pieces: int, secrets: Secrets, tag: str = "f", seed: int = 7) -> list[Outgoing]:
    """`n` distinct events over `pieces` mailpieces (each piece gets one provider), shuffled deterministically."""
    rng = random.Random(seed)
    out: list[Outgoing] = []
    for i in range(n):
        p = i % pieces
        kind = ("generic", "generic", "lob", "postgrid")[p % 4]
        step = i // pieces
        if kind == "lob":
            choices = list(LOB_ACTIONS)
            out.append(_lob(i, f"ltr_{tag}{p:04d}", choices[step % len(choices)], secrets, tag))
        elif kind == "postgrid":
            choices = list(PG_STATUS)
            out.append(_postgrid(i, f"letter_{tag}{p:04d}", choices[step % len(choices)], secrets, tag))
        else:
            out.append(_generic(i, f"mp_{tag}{p:04d}", LIFECYCLE[step % len(LIFECYCLE)], secrets, tag))
    rng.shuffle(out)
    return out


@dataclass
class SendResult:
    """What the sender saw."""

    accepted: set[str] = field(default_factory=set)  # canonical ids answered 200
    rejected: dict[str, int] = field(default_factory=dict)  # canonical id -> final 4xx status
    gave_up: set[str] = field(default_factory=set)
    statuses: Counter[str] = field(default_factory=Counter)  # "200", "503", "conn", "timeout", ...
    attempts: int = 0


class Sender:
    """Posts events at up to `rate` per second from `threads` threads, retrying like a provider."""

    def __init__(self, base_url: str, *, threads: int = 6, rate: float = 60.0, max_time_per_event: float = 60.0,
                 max_attempts: int = 200, timeout: float = 5.0, clock_offset: float = 0.0) -> None:
        self.base_url = base_url
        self.threads = threads
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.max_time = max_time_per_event
        self.max_attempts = max_attempts
        self.timeout = timeout
        self.clock_offset = clock_offset
        self.result = SendResult()
        self._lock = threading.Lock()
        self._next_slot = time.monotonic()
        self.sent = 0

    def _slot(self) -> None:
        with self._lock:
            now = time.monotonic()
            wait = self._next_slot - now
            self._next_slot = max(now, self._next_slot) + self.interval
        if wait > 0:
            time.sleep(wait)

    def _count(self, key: str) -> None:
        with self._lock:
            self.result.statuses[key] += 1
            self.result.attempts += 1

    def send_one(self, client: httpx.Client, ev: Outgoing) -> None:
        """Post `ev` until it is answered 200 or a non-retryable 4xx, within the attempt and time bounds."""
        self._slot()
        with self._lock:
            self.sent += 1
        deadline = time.monotonic() + self.max_time
        backoff = 0.05
        for _ in range(self.max_attempts):
            headers = ev.sign(ev.body, time.time() + self.clock_offset)
            try:
                resp = client.post(ev.path, content=ev.body, headers=headers)
            except httpx.TimeoutException:
                self._count("timeout")
            except httpx.TransportError:
                self._count("conn")
            else:
                self._count(str(resp.status_code))
                if resp.status_code == 200:
                    with self._lock:
                        self.result.accepted.add(ev.canonical_id)
                    return
                if 400 <= resp.status_code < 500 and resp.status_code not in (408, 425, 429):
                    with self._lock:
                        self.result.rejected[ev.canonical_id] = resp.status_code
                    return
            if time.monotonic() + backoff > deadline:
                break
            time.sleep(backoff)
            backoff = min(0.5, backoff * 1.6)
        with self._lock:
            self.result.gave_up.add(ev.canonical_id)

    def run(self, events: list[Outgoing]) -> SendResult:
        """Send every event (blocking)."""
        limits = httpx.Limits(max_connections=self.threads, max_keepalive_connections=self.threads)
        with httpx.Client(base_url=self.base_url, timeout=self.timeout, limits=limits) as client, \
                ThreadPoolExecutor(self.threads) as pool:
            list(pool.map(lambda ev: self.send_one(client, ev), events))
        return self.result

    def start(self, events: list[Outgoing]) -> threading.Thread:
        """Send in a background thread; join it to wait."""
        t = threading.Thread(target=self.run, args=(events,), name="sender", daemon=True)
        t.start()
        return t
