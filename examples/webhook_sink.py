"""A local webhook endpoint for trying postrelay: prints one line per POST it receives and answers 200.

    python3 examples/webhook_sink.py 9000

Standard library only. With `WEBHOOK_SECRET=whsec_...` set it also checks the Standard Webhooks signature.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer


def signature_ok(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """The `webhook-signature` of `id.timestamp.body` with the `whsec_` key (Standard Webhooks)."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers.get('webhook-id')}.{headers.get('webhook-timestamp')}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(hmac.compare_digest(expected, sig.partition(",")[2]) for sig in headers.get("webhook-signature", "").split())


class Sink(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            event = json.loads(body)
        except ValueError:
            event = {}
        secret = os.environ.get("WEBHOOK_SECRET")
        signed = "" if not secret else (" signature ok" if signature_ok(secret, headers, body) else " BAD SIGNATURE")
        print(f"received {event.get('type')} for {event.get('source')}/{event.get('mailpiece', {}).get('id')} "
              f"(stage {event.get('stage')}, webhook-id {headers.get('webhook-id')}){signed}", flush=True)
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # quiet: one line per event above
        pass


def main(argv: list[str]) -> int:
    """Listen on the port in `argv` (default 9000) until Ctrl-C; a mistake is one line on stderr, exit 1."""
    try:
        port = int(argv[1]) if len(argv) > 1 else 9000
    except ValueError:
        print(f"webhook_sink: the port must be a number, not {argv[1]!r}", file=sys.stderr)
        return 1
    secret = os.environ.get("WEBHOOK_SECRET")
    try:
        if secret:
            base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except ValueError:
        print("webhook_sink: WEBHOOK_SECRET must be whsec_<base64>, the destination's secret", file=sys.stderr)
        return 1
    try:
        server = HTTPServer(("127.0.0.1", port), Sink)
    except (OSError, OverflowError) as exc:
        print(f"webhook_sink: cannot listen on 127.0.0.1:{port}: {getattr(exc, 'strerror', None) or exc}",
              file=sys.stderr)
        return 1
    print(f"webhook sink listening on http://127.0.0.1:{port}/ (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("webhook sink stopped", flush=True)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
