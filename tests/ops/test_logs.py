"""Structured logs: one JSON object per line, event and mailpiece ids on request and delivery lines, no secrets."""

from __future__ import annotations

import io
import json
import logging

import pytest

from postrelay.core.config import parse_config
from postrelay.core.logs import config_secrets, resolve_format, setup_logging
from postrelay.core.redaction import REDACTED, Redactor, redact_path
from tests.receiver.harness import API_TOKEN, GENERIC_SECRETS, LOB_SECRETS, PA_TOKEN, PA_TOKEN_OLD, PG_SECRETS
from tests.support import payloads
from tests.support.http_server import LocalHTTPServer, Reply
from tests.workers.conftest import dispatch, drain

DEST_SECRET = "whsec_" + "bG9nLXRlc3Qtc2VjcmV0LTAxMjM0NTY3ODk="
DEST_TOKEN = "dest-bearer-token-9f8e7d6c5b4a"


def lines(buf: io.StringIO) -> list[dict]:
    out = []
    for raw in buf.getvalue().splitlines():
        out.append(json.loads(raw))  # every line is one JSON object
    return out


def test_request_and_delivery_lines_are_json_with_ids_and_no_secrets(make_service, make_runtime, restore_logging):
    calls = []

    def crm(req):
        calls.append(req)
        # a destination that echoes the credential it received in an error body
        if len(calls) == 1:
            return Reply(503, {"error": f"overloaded, your header was {req.headers.get('authorization')}"})
        return Reply(200, {"id": "remote-1"})

    with LocalHTTPServer(crm) as hook:
        override = {"destinations": {"crm": {"type": "webhook", "url": hook.url, "secret": DEST_SECRET,
                                             "headers": {"Authorization": f"Bearer {DEST_TOKEN}"}}},
                    "routes": [{"events": ["*"], "to": ["crm"]}],
                    "delivery": {"base_delay": 0.01, "max_delay": 0.01}}
        svc = make_service(override)
        rt = make_runtime(override)
        buf = io.StringIO()
        secrets = config_secrets(svc.config)
        setup_logging("json", secrets, level="DEBUG", stream=buf)

        order = payloads.postgrid_order("letter", "letter_logs_1", status="printing")
        pg = payloads.postgrid_event("letter.updated", order, event_id="event_logs_1", updated_fields={"status": "printing"})
        assert svc.post_postgrid(pg).json()["accepted"] == 1
        assert svc.post_postalytics(payloads.postalytics_event(11, mail_id="mail-logs-1")).status_code == 200
        assert svc.post_lob(payloads.lob_event("letter.mailed", payloads.lob_mailpiece("letter", "ltr_logs")),
                            secret="wrong-secret-value").status_code == 401
        assert svc.get_piece("postgrid", "letter_logs_1").status_code == 404  # read API, bearer token in header
        svc.http.get("/healthz")
        logging.getLogger("postrelay.test").warning("someone logged %s and %s", PG_SECRETS[0], PA_TOKEN)
        try:
            raise RuntimeError(f"connect failed for redis://:{API_TOKEN}@db:6379")
        except RuntimeError:
            logging.getLogger("postrelay.test").exception("with a traceback")

        dispatch(rt)
        drain(rt)  # first attempt 503 (echoing the token), the retry is scheduled
        from tests.workers.conftest import promote
        rt.clock.advance(5)  # type: ignore[attr-defined]
        promote(rt)
        drain(rt)
        assert len(calls) >= 3

    text = buf.getvalue()
    for secret in [*PG_SECRETS, *LOB_SECRETS, *GENERIC_SECRETS, PA_TOKEN, PA_TOKEN_OLD, API_TOKEN, DEST_SECRET,
                   DEST_TOKEN]:
        assert secret not in text, f"secret leaked: {secret[:8]}..."
    records = lines(buf)
    assert all({"ts", "level", "logger", "msg"} <= set(r) for r in records)

    requests = [r for r in records if r["msg"] == "request"]
    pg_line = next(r for r in requests if r["path"] == "/webhooks/postgrid")
    assert pg_line["status"] == 200 and pg_line["method"] == "POST" and pg_line["source"] == "postgrid"
    assert pg_line["accepted"] == 1 and pg_line["duplicates"] == 0 and pg_line["level"] == "info"
    assert pg_line["event_ids"] and pg_line["event_ids"][0].startswith("mev_")
    assert pg_line["mailpiece_ids"] == ["letter_logs_1"]
    assert isinstance(pg_line["duration_ms"], float)
    pa_line = next(r for r in requests if r["route"] == "/webhooks/postalytics/{token}")
    assert pa_line["path"] == f"/webhooks/postalytics/{REDACTED}"
    assert pa_line["mailpiece_ids"] == ["mail-logs-1"]
    lob_line = next(r for r in requests if r["path"] == "/webhooks/lob")
    assert lob_line["status"] == 401 and lob_line["error"] == "invalid_signature" and "event_ids" not in lob_line
    health = next(r for r in requests if r["path"] == "/healthz")
    assert health["level"] == "debug"

    delivered = [r for r in records if r["msg"] == "delivered"]
    assert {r["mailpiece_id"] for r in delivered} == {"letter_logs_1", "mail-logs-1"}
    assert all(r["event_id"].startswith("mev_") and r["destination"] == "crm" and r["outcome"] == "ok"
               for r in delivered)
    retried = [r for r in records if r.get("outcome") == "retry"]
    assert retried and retried[0]["status"] == 503 and retried[0]["event_id"].startswith("mev_")
    assert any(REDACTED in r["msg"] for r in records if r["logger"] == "postrelay.test")
    assert any("exc" in r and REDACTED in r["exc"] for r in records if r["logger"] == "postrelay.test")


def test_config_secrets_cover_sources_tokens_destinations_and_redis_password():
    config = parse_config({
        "server": {"redis_url": "redis://:redis-pass-1234@db:6379/0", "api_token": "api-token-0123456789abcdef"},
        "sources": {"postgrid": {"secrets": ["pg-secret-abcdef"], "api_key": "live_sk_postgrid_123456"},
                    "lob": {"secrets": ["lob-secret-abcdef"], "api_key": "live_lob_key_123456"},
                    "postalytics": {"token": "pa-token-0123456789abcdef"}},
        "destinations": {"hub": {"type": "hubspot", "token": "pat-na1-abcdef", "portal": "12345"},
                         "sms": {"type": "twilio", "account_sid": "AC0123456789", "auth_token": "twilio-auth-xyz",
                                 "from": "+15550001111"}},
    })
    found = set(config_secrets(config))
    assert {"redis-pass-1234", "api-token-0123456789abcdef", "pg-secret-abcdef", "live_sk_postgrid_123456",
            "lob-secret-abcdef", "live_lob_key_123456", "pa-token-0123456789abcdef", "pat-na1-abcdef",
            "twilio-auth-xyz", "AC0123456789"} <= found
    assert "12345" not in found and "+15550001111" not in found  # not secrets (and short values are never matched)


def test_redactor_catches_json_escaped_secrets_and_whsec_bodies():
    secret = 'quo"te\\slash-secret'
    red = Redactor([secret, "whsec_c2VjcmV0LWJvZHktMDEyMzQ1"])
    line = json.dumps({"msg": f"value {secret}", "key": "c2VjcmV0LWJvZHktMDEyMzQ1"})
    out = red(line)
    assert "quo" not in out and "c2VjcmV0" not in out and out.count(REDACTED) == 2
    json.loads(out)  # still valid JSON


def test_text_format_and_format_resolution(restore_logging, monkeypatch):
    buf = io.StringIO()
    setup_logging("text", ["text-secret-123456"], level="INFO", stream=buf)
    logging.getLogger("postrelay.x").info("hello text-secret-123456", extra={"event_id": "mev_1", "attempt": 2})
    out = buf.getvalue()
    assert "hello [REDACTED]" in out and "event_id=mev_1" in out and "attempt=2" in out
    monkeypatch.delenv("POSTRELAY_LOG_FORMAT", raising=False)
    assert resolve_format(None, None) == "json"
    assert resolve_format(None, "text") == "text"
    monkeypatch.setenv("POSTRELAY_LOG_FORMAT", "text")
    assert resolve_format(None, "json") == "text"
    assert resolve_format("json", "text") == "json"
    with pytest.raises(ValueError):
        resolve_format("yaml", None)
    assert redact_path("/webhooks/postalytics/abc") == f"/webhooks/postalytics/{REDACTED}"
    assert redact_path("/webhooks/lob") == "/webhooks/lob"
