"""Secrets never appear in logs, error bodies or the dead-letter store.

Real `postrelay serve` and `postrelay worker` processes at DEBUG level (JSON and text log formats), every
source configured, a password-protected Redis, destinations with a signing secret and an API-key header.
The test drives the paths that log or answer errors (forged signatures, a wrong Postalytics path token, wrong
read-API tokens, a destination that echoes the request headers in its 500 and 400 answers, a Redis outage)
and then greps everything captured for every secret value.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
import redis

from tests.support import payloads as P
from tests.support import signing
from tests.support.http_server import LocalHTTPServer, Reply
from tests.support.load import Secrets, make_events
from tests.support.processes import ReceiverProcess, WorkerProcess, wait_for, write_config
from tests.support.redis_server import RedisServer

REDIS_PASSWORD = "redis-pass-9f8e7d6c5b4a3210fedc"
API_TOKEN = "read-api-secret-token-5e4d3c2b1a"
PA_TOKEN = "pa-path-token-secret-77aa66bb55cc"
DEST_SECRET = signing.make_whsec(b"outbound-secret")
DEST_API_KEY = "sk_live_dest_api_key_0a1b2c3d4e5f"


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_no_secret_in_logs_error_bodies_or_dead_letters(tmp_path: Path, log_format: str) -> None:
    secrets = Secrets()
    server = RedisServer().start()
    redis.Redis(port=server.port).config_set("requirepass", REDIS_PASSWORD)
    url = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{server.port}/0"

    def echo(req):  # type: ignore[no-untyped-def]
        status = 500 if req.path.endswith("/flaky") else 400
        return Reply(status, {"error": "echo", "headers": req.headers, "body": req.body.decode(errors="replace")})

    bodies: list[str] = []
    with LocalHTTPServer(echo) as dest:
        config = write_config(tmp_path / "c.toml", {
            "server": {"redis_url": url, "api_token": API_TOKEN, "retry_after": 1},
            "sources": {**secrets.sources(), "postalytics": {"token": PA_TOKEN}},
            "delivery": {"base_delay": "0.2s", "max_attempts": 2, "circuit_threshold": 100},
            "destinations": {
                "flaky": {"type": "webhook", "url": f"{dest.url}/flaky", "secret": DEST_SECRET,
                          "headers": {"X-Api-Key": DEST_API_KEY}},
                "broken": {"type": "webhook", "url": f"{dest.url}/broken", "secret": DEST_SECRET,
                           "headers": {"X-Api-Key": DEST_API_KEY}},
            },
            "routes": [{"events": ["*"], "to": ["flaky", "broken"]}],
        })
        env = {"POSTRELAY_LOG_LEVEL": "DEBUG", "POSTRELAY_LOG_FORMAT": log_format}
        receiver = ReceiverProcess(config, tmp_path / "receiver.log", env=env)
        worker = WorkerProcess(config, tmp_path / "worker.log", env=env)
        try:
            receiver.start()
            worker.start()
            with httpx.Client(base_url=receiver.url, timeout=10) as client:
                events = make_events(4, pieces=4, secrets=secrets, tag="sec")
                for ev in events:
                    assert client.post(ev.path, content=ev.body, headers=ev.sign(ev.body, time.time())).status_code == 200
                # forged requests whose headers carry the real secrets in the wrong places
                lob_body = signing.to_bytes(P.lob_event("letter.mailed", P.lob_mailpiece("letter")))
                for headers in ({"Lob-Signature": secrets.lob, "Lob-Signature-Timestamp": secrets.lob},
                                {"Lob-Signature": "00", "Lob-Signature-Timestamp": str(int(time.time())),
                                 "Authorization": f"Bearer {API_TOKEN}"}):
                    bodies.append(client.post("/webhooks/lob", content=lob_body, headers=headers).text)
                bodies.append(client.post("/webhooks/postgrid", content=secrets.postgrid.encode(),
                                          headers={"PostGrid-Signature": f"t={secrets.postgrid},v1={secrets.postgrid}"}).text)
                bodies.append(client.post("/webhooks/generic", content=b"{}", headers={
                    "webhook-id": secrets.generic, "webhook-timestamp": "x", "webhook-signature": secrets.generic}).text)
                bodies.append(client.post(f"/webhooks/postalytics/{PA_TOKEN[:-1]}", content=b"{}").text)
                bodies.append(client.post(f"/webhooks/postalytics/{PA_TOKEN}", content=b"not json").text)
                for token in (API_TOKEN[:-1], API_TOKEN + "x"):
                    bodies.append(client.get("/v1/mailpieces/generic/x", headers={"Authorization": f"Bearer {token}"}).text)
                bodies.append(client.get("/v1/mailpieces/generic/x", params={"token": API_TOKEN}).text)
                bodies.append(client.get("/metrics").text)
                bodies.append(client.get("/readyz").text)
                # both destinations answer with our headers echoed: the 400s dead-letter, the 500s retry then do
                r = redis.Redis(port=server.port, password=REDIS_PASSWORD)
                assert wait_for(lambda: r.hlen("pr:dlq") >= 2 * len(events), 40), worker.log()[-3000:]
                dead = json.dumps([json.loads(v) for v in r.hvals("pr:dlq")])
                # a Redis outage: both processes log about it
                server.stop(kill=True)
                bodies.append(client.post(events[0].path, content=events[0].body,
                                          headers=events[0].sign(events[0].body, time.time())).text)
                bodies.append(client.get("/readyz").text)
                time.sleep(2.0)
                server.start()  # the password was set at runtime: it is gone after the restart, which is fine here
        finally:
            receiver.kill()
            worker.kill()
            server.cleanup()
    captured = "\n".join([receiver.log(), worker.log(), dead, *bodies])
    assert dest.requests and any(r.headers.get("x-api-key") == DEST_API_KEY for r in dest.requests)
    assert "redis_unavailable" in captured and "dead" in captured.lower()
    leaks = {name: value for name, value in {
        "redis password": REDIS_PASSWORD, "read API token": API_TOKEN, "Postalytics path token": PA_TOKEN,
        "Lob secret": secrets.lob, "PostGrid secret": secrets.postgrid, "Standard Webhooks secret": secrets.generic,
        "Standard Webhooks key bytes": secrets.generic.removeprefix("whsec_"),
        "outbound signing secret": DEST_SECRET, "outbound signing key bytes": DEST_SECRET.removeprefix("whsec_"),
        "destination API key": DEST_API_KEY}.items() if value in captured}
    assert not leaks, f"secrets found in logs/bodies/DLQ: {sorted(leaks)}"
