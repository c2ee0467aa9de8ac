"""The adapters' HTTP transport over real loopback sockets: keep-alive, stale connections, errors, TLS."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
import trustme

from postrelay.adapters.transport import StdlibTransport

Serve = Callable[[socket.socket], None]


class RawServer:
    """A TCP server on 127.0.0.1 running `serve(conn)` per accepted connection; counts connections."""

    def __init__(self, serve: Serve, tls: ssl.SSLContext | None = None) -> None:
        self.serve = serve
        self.tls = tls
        self.connections = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            if self.tls is not None:
                try:
                    conn = self.tls.wrap_socket(conn, server_side=True)
                except (ssl.SSLError, OSError):
                    conn.close()
                    continue
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn: socket.socket) -> None:
        try:
            self.serve(conn)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self.sock.close()


def read_request(conn: socket.socket) -> bytes | None:
    """One request (head + Content-Length body) off the connection; None at EOF."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        body += conn.recv(65536)
    return head + b"\r\n\r\n" + body


def ok(body: bytes = b'{"ok":true}', extra: bytes = b"") -> bytes:
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\n" + extra + b"\r\n" + body)


def keep_alive(conn: socket.socket) -> None:
    while read_request(conn) is not None:
        conn.sendall(ok())


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(transport=StdlibTransport(), timeout=2.0) as c:
        yield c


@pytest.fixture
def server_factory() -> Iterator[Callable[..., RawServer]]:
    servers: list[RawServer] = []

    def make(serve: Serve, tls: ssl.SSLContext | None = None) -> RawServer:
        servers.append(RawServer(serve, tls))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def test_requests_reuse_one_keep_alive_connection(client, server_factory):
    seen: list[bytes] = []

    def serve(conn: socket.socket) -> None:
        while (req := read_request(conn)) is not None:
            seen.append(req)
            conn.sendall(ok())

    srv = server_factory(serve)
    for i in range(5):
        r = client.post(f"http://127.0.0.1:{srv.port}/hook?n={i}", content=b'{"a":1}',
                        headers={"webhook-id": "evt_1"})
        assert r.status_code == 200 and r.json() == {"ok": True}
    assert srv.connections == 1
    head = seen[-1].split(b"\r\n")
    assert head[0] == b"POST /hook?n=4 HTTP/1.1"
    assert b"webhook-id: evt_1" in head and f"Host: 127.0.0.1:{srv.port}".encode() in head
    assert seen[-1].endswith(b'{"a":1}')


def test_a_connection_the_server_closed_while_idle_is_replaced(client, server_factory):
    def serve(conn: socket.socket) -> None:  # answers one request, then hangs up (keep-alive timeout)
        if read_request(conn) is not None:
            conn.sendall(ok())

    srv = server_factory(serve)
    url = f"http://127.0.0.1:{srv.port}/"
    assert client.post(url, content=b"1").status_code == 200
    time.sleep(0.1)  # the server's FIN has arrived
    assert client.post(url, content=b"2").status_code == 200
    assert srv.connections == 2


def test_connection_close_answers_are_not_reused(client, server_factory):
    def serve(conn: socket.socket) -> None:
        if read_request(conn) is not None:
            conn.sendall(ok(extra=b"Connection: close\r\n"))

    srv = server_factory(serve)
    for _ in range(3):
        assert client.get(f"http://127.0.0.1:{srv.port}/").status_code == 200
    assert srv.connections == 3


def test_chunked_and_gzip_answers_are_decoded(client, server_factory):
    import gzip

    payload = gzip.compress(b'{"id":"rec_1"}')

    def serve(conn: socket.socket) -> None:
        while read_request(conn) is not None:
            body = b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (5, payload[:5], len(payload) - 5, payload[5:])
            conn.sendall(b"HTTP/1.1 201 Created\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n" + body)

    srv = server_factory(serve)
    for _ in range(2):
        r = client.post(f"http://127.0.0.1:{srv.port}/", json={"x": 1})
        assert r.status_code == 201 and r.json() == {"id": "rec_1"}
    assert srv.connections == 1


def test_a_server_that_never_answers_is_a_read_timeout(server_factory):
    def serve(conn: socket.socket) -> None:
        read_request(conn)
        time.sleep(2)

    srv = server_factory(serve)
    with httpx.Client(transport=StdlibTransport(), timeout=0.3) as c:
        started = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            c.post(f"http://127.0.0.1:{srv.port}/", content=b"x")
        assert time.monotonic() - started < 1.5


def test_a_body_cut_short_is_a_protocol_error(client, server_factory):
    def serve(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"partial\"")

    srv = server_factory(serve)
    with pytest.raises(httpx.RemoteProtocolError):
        client.get(f"http://127.0.0.1:{srv.port}/")


def test_a_server_hanging_up_without_an_answer_is_a_protocol_error(client, server_factory):
    srv = server_factory(lambda conn: read_request(conn) and None)
    with pytest.raises(httpx.RemoteProtocolError):
        client.post(f"http://127.0.0.1:{srv.port}/", content=b"x")


def test_a_refused_connection_is_a_connect_error(client):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there
    with pytest.raises(httpx.ConnectError):
        client.get(f"http://127.0.0.1:{port}/")


def test_tls_verifies_the_certificate(server_factory):
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    srv = server_factory(keep_alive, tls=server_ctx)
    url = f"https://127.0.0.1:{srv.port}/"
    with (httpx.Client(transport=StdlibTransport(), timeout=2.0) as c,  # certifi's roots: unknown CA
          pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED")):
        c.get(url)
    transport = StdlibTransport()
    ca.configure_trust(transport._ssl)
    with httpx.Client(transport=transport, timeout=2.0) as c:
        assert [c.post(url, content=b"x").status_code for _ in range(3)] == [200, 200, 200]


def test_unsupported_scheme_is_refused(client):
    with pytest.raises(httpx.UnsupportedProtocol):
        client.get("ftp://127.0.0.1/file")


def test_the_relay_client_keeps_no_cookies_between_deliveries(server_factory):
    from postrelay.adapters.client import relay_client

    seen: list[bytes] = []

    def serve(conn: socket.socket) -> None:
        while (req := read_request(conn)) is not None:
            seen.append(req)
            conn.sendall(ok(extra=b"Set-Cookie: sid=s3cr3t; Path=/\r\n"))

    srv = server_factory(serve)
    with relay_client(2.0) as c:
        for _ in range(2):
            assert c.post(f"http://127.0.0.1:{srv.port}/hook", content=b"x").status_code == 200
        assert len(c.cookies) == 0
    assert len(seen) == 2 and b"cookie:" not in seen[1].lower()
    with httpx.Client(transport=StdlibTransport()) as plain:  # what httpx alone would have done
        plain.post(f"http://127.0.0.1:{srv.port}/hook", content=b"x")
        plain.post(f"http://127.0.0.1:{srv.port}/hook", content=b"x")
    assert b"cookie: sid=s3cr3t" in seen[-1].lower()
