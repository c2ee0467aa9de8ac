"""A no-op webhook destination, run as its own process: answers 200 and records when each webhook arrived.

`python -m bench.sink --port P`. Any POST is answered `200 {}` at once (keep-alive). For each one the
sink keeps `(webhook-id, arrival epoch seconds, received_at from the canonical event body)`; POSTs without
a `webhook-id` (the direct-POST baseline) are only counted. Paths under `/crm/` play HubSpot's API (every call
answers `{"id":"1"}`); a note is recorded as `crm:<the bench piece id it names>` (else `crm:<event id>`).
`GET /__stats` returns `{"count", "duplicates", "anonymous", "arrivals": [[id, t, received_at], ...]}`;
`GET /__count` returns `{"count"}` only; `POST /__reset` forgets everything. A raw asyncio protocol on
uvloop, so the sink costs little CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time

_RECEIVED_AT = re.compile(rb'"received_at":"([^"]+)"')
_OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"
# `/crm/…` plays HubSpot: every call answers an object id; a note (its text names the postrelay event id) is an
# arrival of that event
_CRM_OK = b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 10\r\n\r\n{"id":"1"}'
_EVENT_ID = re.compile(rb"\bbench_\d+\b|mev_[0-9a-f]{32}")  # a bench piece id (links scenario), else the event id


class Recorder:
    """Arrivals seen so far."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[str, float, str]] = []
        self.seen: set[str] = set()
        self.duplicates = 0
        self.anonymous = 0

    def record(self, webhook_id: str, body: bytes) -> None:
        """Note one webhook."""
        now = time.time()
        if not webhook_id:
            self.anonymous += 1
            return
        if webhook_id in self.seen:
            self.duplicates += 1
            return
        self.seen.add(webhook_id)
        m = _RECEIVED_AT.search(body)
        self.arrivals.append((webhook_id, now, m.group(1).decode() if m else ""))

    def stats(self) -> bytes:
        """The JSON answer of `GET /__stats`."""
        return json.dumps({"count": len(self.arrivals), "duplicates": self.duplicates, "anonymous": self.anonymous,
                           "arrivals": self.arrivals}).encode()

    def reset(self) -> None:
        """Forget everything."""
        self.arrivals.clear()
        self.seen.clear()
        self.duplicates = self.anonymous = 0


class _Server(asyncio.Protocol):
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end])
            headers = {}
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get(b"content-length", b"0"))
            if len(buf) < end + 4 + length:
                return
            body = bytes(buf[end + 4:end + 4 + length])
            del buf[:end + 4 + length]
            self._answer(head.split(b" ", 2), headers, body)

    def _answer(self, request_line: list[bytes], headers: dict[bytes, bytes], body: bytes) -> None:
        assert self.transport is not None
        method, path = request_line[0], request_line[1] if len(request_line) > 1 else b"/"
        if path == b"/__stats":
            payload = self.recorder.stats()
            self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                                 + str(len(payload)).encode() + b"\r\n\r\n" + payload)
            return
        if path == b"/__count":
            payload = b'{"count": %d}' % len(self.recorder.arrivals)
            self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                                 + str(len(payload)).encode() + b"\r\n\r\n" + payload)
            return
        if path.startswith(b"/crm/"):
            found = _EVENT_ID.search(body) if method == b"POST" and path.endswith(b"/notes") else None
            if found:
                self.recorder.record("crm:" + found.group(0).decode(), body)
            self.transport.write(_CRM_OK)
            return
        if path == b"/__reset":
            self.recorder.reset()
        elif method == b"POST":
            self.recorder.record(headers.get(b"webhook-id", b"").decode(), body)
        self.transport.write(_OK)


async def serve(host: str, port: int) -> None:
    """Serve until killed."""
    recorder = Recorder()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Server(recorder), host, port, backlog=1024)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    """Parse arguments and serve."""
    import uvloop

    p = argparse.ArgumentParser(prog="python -m bench.sink")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args(argv)
    uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
