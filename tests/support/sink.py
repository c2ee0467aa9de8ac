"""A destination for fault tests: a loopback webhook receiver that records which `webhook-id`s it *answered*.

"Delivered" is measured from the destination's side: a request counts as answered 2xx only when its 2xx
response was written to a client that was still connected when the answer went out. A request whose
client was SIGKILLed while the sink held it (its socket already closed) is recorded as `abandoned`: the
worker never learnt the outcome and legitimately sends it again with the same `webhook-id`. A duplicate
side effect is the same `webhook-id` answered 2xx twice.

Behaviours (per request, from `behaviour(webhook_id, n)`): answer after a delay, hang (never answer), reset
the connection, drip the response one byte at a time, answer an error status. `hold()` makes every new or
waiting request wait before it is answered (the fault tests kill workers while requests are held, so the
kill lands mid-request and never between a 2xx and the worker's done-marker write).
"""

from __future__ import annotations

import json
import select
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SETTLE_S = 2.0  # how long a result waits for an answer that is being written to be noted


@dataclass
class Behaviour:
    """How to answer one request."""

    kind: str = "ok"  # ok | status | hang | reset | drip
    status: int = 200
    delay: float = 0.0
    drip_interval: float = 0.5  # `drip`: seconds between response bytes


@dataclass
class SinkRecord:
    """One request as the sink saw it."""

    webhook_id: str
    path: str
    arrived: float
    outcome: str = "pending"  # answering (its last bytes) | answered | abandoned | reset | hung | error
    status: int | None = None
    finished: float | None = None
    answering_wall: float | None = None  # time.time() just before the answer is written (vs Redis MONITOR times)
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def _peer_alive(sock: socket.socket) -> bool:
    """False when the client has closed its end (a killed process's socket is closed by the kernel)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return True
        data = sock.recv(1, socket.MSG_PEEK)  # readable: returns at once (b"" = closed by the peer)
    except (OSError, ValueError):
        return False
    return data != b""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def handle_error(self, request: Any, client_address: Any) -> None:  # clients hang up: expected here
        pass


class RecordingSink:
    """ThreadingHTTPServer on 127.0.0.1:<free port> recording answered webhook ids."""

    def __init__(self, behaviour: Callable[[str, int], Behaviour] | None = None, name: str = "sink") -> None:
        self.name = name
        self.behaviour = behaviour or (lambda wid, n: Behaviour())
        self.records: list[SinkRecord] = []
        self._lock = threading.Lock()
        self._seen: Counter[str] = Counter()
        self._open = threading.Event()
        self._open.set()
        self._stop = threading.Event()
        self.held = 0
        outer = self

        class _H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 60
            # headers and body go out as two writes: with Nagle on, the body would wait ~40 ms for the
            # client's delayed ACK, a stall no real destination adds to the 2xx -> done-marker window
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                outer._handle(self)

            do_GET = do_PUT = do_PATCH = do_POST

        self.server = _Server(("127.0.0.1", 0), _H)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    # --- control ---------------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL."""
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def hold(self) -> None:
        """Hold every request (new and arriving) until `release()`."""
        self._open.clear()

    def release(self) -> None:
        """Answer held requests (those whose client is gone are recorded as abandoned)."""
        self._open.set()

    def __enter__(self) -> RecordingSink:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._open.set()
        self.server.shutdown()
        self.server.server_close()

    # --- results ---------------------------------------------------------------------------------------------

    def _settled(self) -> list[SinkRecord]:
        """The records, once none is writing its last bytes (`answering`): a client that has read its answer
        may ask before the handler has noted it (bounded: SETTLE_S)."""
        deadline = time.monotonic() + SETTLE_S
        while True:
            with self._lock:
                records = list(self.records)
            if time.monotonic() > deadline or not any(r.outcome == "answering" for r in records):
                return records
            time.sleep(0.002)

    def answered_2xx(self) -> Counter[str]:
        """webhook-id -> how many times a 2xx answer reached a connected client."""
        return Counter(r.webhook_id for r in self._settled()
                       if r.outcome == "answered" and r.status is not None and 200 <= r.status < 300)

    def outcomes(self) -> Counter[str]:
        """How many requests ended each way."""
        return Counter(r.outcome for r in self._settled())

    def answered_times(self) -> list[float]:
        """Monotonic times at which 2xx answers went out."""
        return sorted(r.finished for r in self._settled()
                      if r.outcome == "answered" and r.finished is not None and r.status and r.status < 300)

    # --- the handler -----------------------------------------------------------------------------------------

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        wid = h.headers.get("webhook-id") or ""
        rec = SinkRecord(wid, h.path, time.monotonic(), body=body, headers={k.lower(): v for k, v in h.headers.items()})
        with self._lock:
            self.records.append(rec)
            n = self._seen[wid]
            self._seen[wid] += 1
        how = self.behaviour(wid, n)
        sock = h.connection
        if how.kind == "reset":
            rec.outcome = "reset"
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            h.close_connection = True
            sock.close()
            return
        if how.kind == "hang":
            rec.outcome = "hung"
            while not self._stop.wait(0.1) and _peer_alive(sock):
                pass
            h.close_connection = True
            return
        if how.delay:
            self._stop.wait(how.delay)
        if not self._open.is_set():
            with self._lock:
                self.held += 1
            try:
                self._open.wait(60)
            finally:
                with self._lock:
                    self.held -= 1
        payload = json.dumps({"ok": how.status < 300, "id": wid}).encode()
        try:
            if not _peer_alive(sock):
                rec.outcome = "abandoned"
                h.close_connection = True
                return
            rec.answering_wall = time.time()
            h.send_response(how.status)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(payload)))
            h.end_headers()
            if how.kind == "drip":
                h.wfile.flush()
                for i in range(len(payload)):
                    if self._stop.wait(how.drip_interval) or not _peer_alive(sock):
                        rec.outcome = "abandoned"
                        h.close_connection = True
                        return
                    if i == len(payload) - 1:
                        rec.outcome = "answering"
                    h.wfile.write(payload[i:i + 1])
                    h.wfile.flush()
            else:
                rec.outcome = "answering"  # the client may have it before `answered` is set below
                h.wfile.write(payload)
                h.wfile.flush()
        except OSError:
            rec.outcome = "abandoned"
            h.close_connection = True
            return
        rec.status = how.status
        rec.finished = time.monotonic()
        rec.outcome = "answered"
