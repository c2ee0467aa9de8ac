"""A lean HTTP/1.1 transport for the adapters' shared `httpx.Client`: keep-alive connections of `http.client`.

Adapters keep httpx's API (requests, responses, timeouts, errors); only the wire layer changes. Measured
on loopback (bench/RESULTS.md), a 1 KB webhook POST costs ~380 µs of CPU through httpx's default transport
(httpcore + h11), ~240 µs through urllib3 and ~100 µs through `http.client`, the standard library's C-assisted
HTTP/1.1 client: at hundreds of deliveries per second per worker that is the biggest single cost.

- Connections are pooled per (scheme, host, port); an idle one is checked before reuse (a peer that closed
  it makes the socket readable) and dropped when stale. At most `max_idle` idle connections per origin.
- Timeouts: connect with the request's connect timeout, then every socket read and write with its read
  timeout (http.client has one socket timeout; httpx's separate write timeout maps onto the read one).
  Errors become httpx's own exceptions (`ConnectTimeout`, `ReadTimeout`, `ConnectError`, `ReadError`,
  `RemoteProtocolError`), which `Adapter.call` turns into retry outcomes.
- TLS verifies certificates against certifi's bundle, as httpx does. Requests through a proxy never reach
  this transport: httpx mounts its own proxy transports for the environment's HTTP(S)_PROXY variables.
"""

from __future__ import annotations

import http.client
import select
import socket
import ssl
import threading
from collections.abc import Iterator

import certifi
import httpx

_Origin = tuple[str, str, int]


def _timeout_error(exc: BaseException, phase: str) -> httpx.TimeoutException:
    kind = {"connect": httpx.ConnectTimeout, "write": httpx.WriteTimeout}.get(phase, httpx.ReadTimeout)
    return kind(f"{phase} timed out: {exc}")


class _Body(httpx.SyncByteStream):
    """The response body, read in chunks; the connection goes back to the pool once it was read to the end."""

    def __init__(self, transport: StdlibTransport, origin: _Origin, conn: http.client.HTTPConnection,
                 response: http.client.HTTPResponse) -> None:
        self._transport = transport
        self._origin = origin
        self._conn: http.client.HTTPConnection | None = conn
        self._response = response

    def __iter__(self) -> Iterator[bytes]:
        response = self._response
        try:
            while not response.isclosed() and response.length != 0:
                chunk = response.read1(65536)
                if not chunk:
                    if response.length:  # EOF before Content-Length bytes (chunked bodies raise themselves)
                        raise http.client.IncompleteRead(b"", response.length)
                    break
                yield chunk
            response.close()  # read to the end: frees the connection for its next request
        except TimeoutError as exc:
            self._discard()
            raise _timeout_error(exc, "read") from exc
        except http.client.IncompleteRead as exc:
            self._discard()
            raise httpx.RemoteProtocolError(f"incomplete answer: {exc!r}") from exc
        except (OSError, http.client.HTTPException) as exc:
            self._discard()
            raise httpx.ReadError(f"{type(exc).__name__}: {exc}") from exc

    def _discard(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._response.isclosed() and not self._response.will_close and self._response.length in (None, 0):
            self._transport._release(self._origin, conn)  # read to the end on a keep-alive connection
        else:
            conn.close()


class StdlibTransport(httpx.BaseTransport):
    """HTTP/1.1 over pooled `http.client` connections (see the module docstring)."""

    def __init__(self, verify: bool = True, max_idle: int = 32) -> None:
        self._ssl = ssl.create_default_context(cafile=certifi.where())
        if not verify:
            self._ssl.check_hostname = False
            self._ssl.verify_mode = ssl.CERT_NONE
        self._max_idle = max_idle
        self._idle: dict[_Origin, list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send `request` and return its response with a streaming body."""
        url = request.url
        if url.scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {url.scheme!r}")
        origin = (url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80))
        timeouts = request.extensions.get("timeout", {})
        read_timeout = timeouts.get("read")
        body = request.read()
        conn = self._connection(origin, timeouts.get("connect"), read_timeout)
        phase = "write"
        try:
            conn.putrequest(request.method, url.raw_path.decode("ascii"), skip_host=True,
                            skip_accept_encoding=True)
            for name, value in request.headers.raw:
                conn.putheader(name, value)
            conn.endheaders(body or None)
            phase = "read"
            response = conn.getresponse()
        except TimeoutError as exc:
            conn.close()
            raise _timeout_error(exc, phase) from exc
        except http.client.RemoteDisconnected as exc:
            conn.close()
            raise httpx.RemoteProtocolError(f"server disconnected without sending a response: {exc}") from exc
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            error = httpx.WriteError if phase == "write" else httpx.ReadError
            raise error(f"{type(exc).__name__}: {exc}") from exc
        return httpx.Response(response.status, headers=response.getheaders(),
                              stream=_Body(self, origin, conn, response),
                              extensions={"http_version": b"HTTP/1.1",
                                          "reason_phrase": (response.reason or "").encode("latin-1", "replace")})

    def _connection(self, origin: _Origin, connect_timeout: float | None,
                    read_timeout: float | None) -> http.client.HTTPConnection:
        while True:
            with self._lock:
                idle = self._idle.get(origin)
                conn = idle.pop() if idle else None
            if conn is None:
                break
            if conn.sock is not None and not _readable(conn.sock):
                conn.sock.settimeout(read_timeout)
                return conn
            conn.close()  # the peer closed it (or sent something unasked) while idle
        scheme, host, port = origin
        if scheme == "https":
            conn = http.client.HTTPSConnection(host, port, timeout=connect_timeout, context=self._ssl)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=connect_timeout)
        try:
            conn.connect()
        except TimeoutError as exc:
            conn.close()
            raise _timeout_error(exc, "connect") from exc
        except (OSError, ssl.SSLError) as exc:
            conn.close()
            raise httpx.ConnectError(f"{type(exc).__name__}: {exc}") from exc
        assert conn.sock is not None
        conn.sock.settimeout(read_timeout)
        return conn

    def _release(self, origin: _Origin, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            idle = self._idle.setdefault(origin, [])
            if len(idle) < self._max_idle:
                idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        """Close every idle connection."""
        with self._lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()


def _readable(sock: socket.socket) -> bool:
    """True when an idle keep-alive socket has something to read: the peer closed it (EOF) or misbehaved."""
    try:
        poller = select.poll()  # not select(): that fails for descriptors above FD_SETSIZE (1024)
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True
