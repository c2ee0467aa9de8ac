"""The one redaction mechanism (`postrelay.core.redaction`): which values are secret and how they are hidden."""

from __future__ import annotations

import json

from postrelay.adapters._payload import scrub
from postrelay.adapters.base import Outcome
from postrelay.core.config_errors import located
from postrelay.core.redaction import (
    MASK,
    REDACTED,
    Redactor,
    clean,
    mask_url,
    redact,
    redact_path,
    secret_values,
    url_secrets,
)


def test_redact_replaces_every_secret_longest_first_and_leaves_short_values():
    text = "token abcd-1234-efgh and its prefix abcd-1234, not abc"
    assert redact(text, ["abcd-1234", "abcd-1234-efgh", "abc"]) == \
        f"token {REDACTED} and its prefix {REDACTED}, not abc"  # 3 characters: too short to redact
    assert redact(text, ["abcd-1234"], mask=MASK) == "token ***-efgh and its prefix ***, not abc"
    assert redact(text, ["abcd-1234"], min_len=10) == text
    assert redact("", ["abcd-1234"]) == "" and redact(text, []) == text


def test_redactor_catches_secrets_inside_json_strings_and_whsec_bodies():
    secret = 'quo"te\\sé-secret'
    red = Redactor([secret, "whsec_c2VjcmV0LWJvZHk="])
    line = json.dumps({"msg": f"value {secret}", "body": "c2VjcmV0LWJvZHk="}, ensure_ascii=False)
    out = red(line)
    assert "quo" not in out and "c2VjcmV0" not in out and out.count(REDACTED) == 2
    json.loads(out)  # still valid JSON
    assert red(json.dumps({"msg": secret})) == json.dumps({"msg": REDACTED})  # escaped as ASCII too
    assert red.active and not Redactor([]).active and Redactor([])("x") == "x"
    assert clean(["whsec_c2VjcmV0LWJvZHk=", "short", "", "long-enough"], min_len=6) == [
        "whsec_c2VjcmV0LWJvZHk=", "c2VjcmV0LWJvZHk=", "long-enough"]


def test_secret_values_of_a_config_document():
    doc = {
        "server": {"api_token": "api-token-123", "redis_url": "redis://user:redis-pw-99@db:6379/0", "port": 8080},
        "sources": {"lob": {"secrets": ["lob-secret-1", "lob-secret-2"], "name": "not-secret"}},
        "destinations": {
            "hook": {"url": "https://h.example/in?api_key=q%2Fkey-7&mode=fast", "headers": {"X-Tenant": "tenant-1"}},
            "crm": {"auth_token": "abc", "nested": [{"client_secret": "cs-123456"}]},
        },
    }
    found = secret_values(doc)
    assert set(found) == {"api-token-123", "redis-pw-99", "lob-secret-1", "lob-secret-2", "q%2Fkey-7", "q/key-7",
                          "tenant-1", "cs-123456"}  # `abc` is too short; `fast`, `not-secret` are not secret
    assert "tenant-1" not in secret_values(doc, headers=False)  # only header values whose name looks secret
    assert secret_values({"headers": {"X-Api-Key": "header-key-1"}}, headers=False) == ["header-key-1"]


def test_url_secrets_and_mask_url():
    assert url_secrets("redis://:hunter2-secret@db:6379/0") == ["hunter2-secret"]
    assert url_secrets("redis+sentinel://u:p%40ss-word@h1:26379,h2:26379/m/0") == ["p%40ss-word", "p@ss-word"]
    assert url_secrets("https://x.example/a?token=t-1&page=2;sid=s-2") == ["t-1", "s-2"]
    assert url_secrets("not a url&token=x") == [] and url_secrets("https://x.example/?token=") == []
    assert mask_url("redis://:hunter2-secret@db:6379/0") == "redis://:***@db:6379/0"
    assert mask_url("rediss://default:pw-1@db:6380/0?ssl_cert_reqs=none&password=pw-2") == \
        "rediss://default:***@db:6380/0?ssl_cert_reqs=none&password=***"
    assert mask_url("redis://db:6379/0") == "redis://db:6379/0" and mask_url(None) == ""


def test_redact_path_hides_token_segments():
    assert redact_path("/webhooks/postalytics/abc") == f"/webhooks/postalytics/{REDACTED}"
    assert redact_path("/webhooks/postalytics/a/b") == f"/webhooks/postalytics/{REDACTED}"
    assert redact_path("/t/tok_123") == f"/t/{REDACTED}"
    assert redact_path("/t/tok_123/goal") == f"/t/{REDACTED}/goal"
    assert redact_path("/t/tok/other") == f"/t/{REDACTED}"  # an unknown rest goes with the token
    assert redact_path("/t/goal") == f"/t/{REDACTED}"
    for path in ("/webhooks/lob", "/webhooks/postalytics/", "/t/", "/v1/mailpieces/lob/t/x"):
        assert redact_path(path) == path


def test_config_errors_and_delivery_details_go_through_it():
    assert located(["server.api_token: bad value api-token-123"], "c.toml", ["api-token-123"]) == [
        f"c.toml: server.api_token: bad value {REDACTED}"]
    outcome = scrub(Outcome.retry('HTTP 500: {"echo": "Bearer tok-98765", "q": "tok-98765"}'), ["tok-98765"])
    assert outcome.detail == 'HTTP 500: {"echo": "Bearer ***", "q": "***"}'
