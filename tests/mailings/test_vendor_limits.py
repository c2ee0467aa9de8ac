"""Mailings stay inside the limits the providers' documents state in prose (fidelity audit).

Lob's OpenAPI document (`tests/vendor/lob_mail.json`) says of `metadata`: "Must be an object with up to 20
key-value pairs", and of `merge_variables`: "Your variable names cannot contain any whitespace or any of the
following special characters". The Lob stand-in reads both rules from that text (`LobRules`) and refuses a
request that breaks them, as Lob does.
"""

from __future__ import annotations

import json
import re
import time
from datetime import datetime
from pathlib import Path

import pytest

from postrelay.core.events import CanonicalEvent, Mailpiece, Recipient
from postrelay.core.stores import mailings as store
from postrelay.workers.followups import FollowupHandler, Scheduler
from postrelay.workers.mailings import Creator
from tests.mailings.conftest import ADA, LOB_KEY, SENDER, Env, mailing
from tests.receiver.harness import assert_error
from tests.support.http_server import Reply
from tests.support.providers import LOB_SPEC, MAILING_CLASSES, LobRules, LobStandIn
from tests.workers.conftest import dispatch, push

RULES = LobRules(json.loads(LOB_SPEC.read_text()))


def test_the_rules_come_from_lobs_own_words() -> None:
    assert "Must be an object with up to 20 key-value pairs." in RULES.metadata_text
    assert RULES.max_metadata_pairs == 20
    assert RULES.max_variables_chars == 25_000
    assert {"!", '"', "#", "%", "&", "'", "(", ")", "*", "+", ",", "/", ";", "<", "=", ">", "@", "[", "\\", "]",
            "^", "`", "{", "|", "}", "~"} == RULES.forbidden
    assert RULES.problem({"metadata": {f"k{i}": "v" for i in range(21)}}) is not None  # negative controls
    assert RULES.problem({"merge_variables": {"First Name": "Ada"}}) is not None
    assert RULES.problem({"merge_variables": {"first_name": "Ada"}, "metadata": {"a": "b"}}) is None


@pytest.mark.parametrize("provider", ["pg", "lob"])
def test_nineteen_keys_and_a_campaign_id_would_be_21_pairs_so_the_request_is_refused(env: Env,
                                                                                      provider: str) -> None:
    """`campaign_id` is written into the metadata next to `postrelay_mailing`: with 19 keys of the caller's
    the piece would carry 21 pairs (Lob refuses it; the mailing used to be accepted and then fail)."""
    body = mailing(provider, metadata={f"k{i}": "v" for i in range(19)}, campaign_id="winback")
    err = assert_error(env.post_mailing(body), 400, "invalid_mailing")
    assert "campaign_id" in err["detail"] and "20" in err["detail"]
    assert env.redis.zcard("pr:ml:index") == 0


def test_eighteen_keys_and_a_campaign_id_fill_exactly_the_20_pairs_lob_allows(env: Env) -> None:
    body = mailing("lob", metadata={f"k{i}": "v" for i in range(18)}, campaign_id="winback")
    assert env.post_mailing(body).status_code == 202
    assert env.work() == 1
    assert env.lob.violations == []
    [create] = [r for r in env.lob.requests if r.method == "POST"]
    assert len(create.json()["metadata"]) == 20


def test_a_campaign_id_already_among_the_keys_is_not_counted_twice(env: Env) -> None:
    keys = {f"k{i}": "v" for i in range(18)} | {"campaign_id": "winback"}
    assert env.post_mailing(mailing("lob", metadata=keys, campaign_id="winback")).status_code == 202
    assert env.work() == 1
    assert env.lob.violations == [] and len(env.lob.pieces) == 1


def test_lob_merge_variable_names_lob_refuses_are_a_400_at_the_request(env: Env) -> None:
    body = mailing("lob", merge_variables={"First Name": "Ada"})
    err = assert_error(env.post_mailing(body), 400, "invalid_mailing")
    assert "merge_variables" in err["detail"] and "First Name" in err["detail"]
    assert env.post_mailing(mailing("pg", merge_variables={"First Name": "Ada"}), key="k2").status_code == 202


def _event(metadata: dict) -> CanonicalEvent:
    return CanonicalEvent.build(
        source="postalytics", source_event_id="pl_fu_1", type="delivered",
        occurred_at=datetime.fromisoformat("2026-11-20T10:00:00+00:00"),
        mailpiece=Mailpiece(id="pl_first", kind="postcard", country="US", campaign_id="spring"),
        recipient=Recipient(name="Ada Lovelace", address_line1="145 Mulberry St", city="New York", region="NY",
                            postal_code="10013", country="US"),
        metadata={**metadata, "postrelay": {"event_type": 6}})


@pytest.mark.parametrize("with_link", [False, True])
def test_a_followup_of_a_piece_with_many_crm_keys_stays_inside_lobs_limits(make_runtime, clock,
                                                                          with_link: bool) -> None:
    """A Postalytics piece's `meta.fields` are the list's columns ("First Name", ...): as Lob merge variable
    names they are refused, and with `campaign_id`, the follow-up keys and a link they overflow 20 pairs."""
    crm = {f"crm_{i}": str(i) for i in range(20)} | {"First Name": "Ada", "zip+4": "10013-1234"}
    followup = {"name": "second-touch", "after": "delivered", "delay": "0", "do": "second"}
    config: dict = {"destinations": {"second": {"type": "lob", "api_key": LOB_KEY, "kind": "postcard",
                                                "front_template": "tmpl_f", "back_template": "tmpl_b",
                                                "from_address": SENDER}},
                    "followups": [followup]}
    if with_link:
        followup["link"] = {"target_url": "https://shop.example.com/again/{mailpiece.id}"}
        config["links"] = {"base_url": "https://go.example.com", "allowed_hosts": ["shop.example.com"]}
    with LobStandIn(LOB_KEY) as lob:
        config["destinations"]["second"]["base_url"] = lob.url
        rt = make_runtime(config)
        clock.now = datetime.fromisoformat("2026-11-20T10:00:05+00:00").timestamp()
        push(rt, _event(crm))
        dispatch(rt, handlers=[FollowupHandler(rt)])
        assert Scheduler(rt).run_once() == 1
        Creator(rt).run_once()
        assert lob.violations == [] and len(lob.pieces) == 1
        [view] = store.listing(rt.redis)
        assert view["status"] == "created"
        body = lob.requests[-1].json()
        metadata = body["metadata"]
        assert len(metadata) == 20
        assert metadata["campaign_id"] == "spring"
        assert metadata["postrelay_mailing"] == view["mailing_id"]
        assert metadata["postrelay_previous_mailpiece"] == "pl_first"
        assert metadata["postrelay_followup"] == "second-touch"
        assert ("postrelay_link" in metadata) is with_link
        assert "First Name" not in body["merge_variables"] and "zip+4" not in body["merge_variables"]
        assert body["merge_variables"]["crm_19"] == "19"  # every usable name still reaches the template


@pytest.mark.parametrize(("to", "expected"), [
    # Lob's international address_country: "Does not accept `US`, `AS`, `PR`, `FM`, `GU`, `MH`, `MP`, `PW`, or `VI`"
    ({"country": "PR", "region": "PR", "city": "San Juan", "postal_code": "00901"},
     {"address_country": "US", "address_state": "PR", "address_zip": "00901"}),
    ({"country": "VI", "region": None, "city": "Charlotte Amalie", "postal_code": "00802"},
     {"address_country": "US", "address_state": "VI", "address_zip": "00802"}),
    ({"country": "GU", "region": "Guam", "city": "Hagatna", "postal_code": "96910"},
     {"address_country": "US", "address_state": "GU", "address_zip": "96910"}),
    # the US form: address_state "2 letter state short-name code", address_zip `^\d{5}(-\d{4})?$`
    ({"region": "New York", "postal_code": "100131234"},
     {"address_country": "US", "address_state": "NY", "address_zip": "10013-1234"}),
    ({"region": "california", "city": "San Francisco", "postal_code": "94107 1234"},
     {"address_country": "US", "address_state": "CA", "address_zip": "94107-1234"}),
])
def test_us_territories_and_state_names_reach_lob_in_its_us_address_form(env: Env, to: dict, expected: dict) -> None:
    body = mailing("lob", to={**ADA, **{k: v for k, v in to.items() if v is not None}})
    if to.get("region", "") is None:
        body["to"].pop("region")
    assert env.post_mailing(body).status_code == 202
    assert env.work() == 1
    assert env.lob.violations == []  # openapi-core against Lob's document: the piece is made
    [create] = [r for r in env.lob.requests if r.method == "POST"]
    sent = create.json()["to"]
    assert {k: sent.get(k) for k in expected} == expected



SEED = Path(__file__).resolve().parents[3] / "shared" / "seeds" / "postgrid-print-mail-api.txt"


@pytest.mark.skipif(not SEED.is_file(), reason="the shared seeds folder is absent")
def test_the_postgrid_stand_in_knows_exactly_the_mailing_classes_of_postgrids_reference() -> None:
    text = SEED.read_text()
    start = text.index("`mailingClass: optional \"first_class\" or \"standard_class\" or \"express\" or 23 more`")
    listed = re.findall(r'- `"([a-z0-9_]+)"`', text[start:text.index("`mergeVariables:", start)])
    assert len(listed) == 26 and set(listed) == MAILING_CLASSES


@pytest.mark.parametrize("mailing_class", ["au_post_second_class", "usps_express_3_day_certified_return_receipt",
                                           "ups_express_overnight", "usps_first_class_registered"])
def test_every_documented_postgrid_mailing_class_reaches_postgrid(env: Env, mailing_class: str) -> None:
    assert env.post_mailing(mailing("pg", mailing_class=mailing_class)).status_code == 202
    assert env.work() == 1
    assert env.postgrid.violations == [] and len(env.postgrid.pieces) == 1
    [create] = [r for r in env.postgrid.requests if r.method == "POST"]
    assert create.json()["mailingClass"] == mailing_class


@pytest.mark.parametrize(("provider", "kind", "size", "sent"), [
    ("lob", "letter", "us_legal", "us_legal"),  # Lob letters: `size` enum us_letter / us_legal
    ("lob", "postcard", "9x6", "6x9"), ("lob", "postcard", "6x11", "6x11"),
    ("pg", "letter", "a4", "a4"), ("pg", "postcard", "4x6", "6x4"),
])
def test_a_size_the_provider_prints_reaches_it(env: Env, provider: str, kind: str, size: str, sent: str) -> None:
    assert env.post_mailing(mailing(provider, kind, size=size, **({"from": SENDER} if kind == "letter" else {}))
                            ).status_code == 202
    assert env.work() == 1
    stand_in = env.lob if provider == "lob" else env.postgrid
    assert stand_in.violations == [] and len(stand_in.pieces) == 1
    [create] = [r for r in stand_in.requests if r.method == "POST"]
    assert create.json()["size"] == sent


@pytest.mark.parametrize(("provider", "kind", "size"), [
    ("lob", "postcard", "A6"), ("lob", "postcard", "5x7"), ("lob", "letter", "a4"),
    ("pg", "postcard", "8x5"), ("pg", "letter", "us_legal"),
])
def test_a_size_the_provider_does_not_print_is_a_400_not_another_size(env: Env, provider: str, kind: str,
                                                                     size: str) -> None:
    """Lob's postcard used to go out 4x6 (the unknown size was dropped) and its letter size was never sent."""
    err = assert_error(env.post_mailing(mailing(provider, kind, size=size)), 400, "invalid_mailing")
    assert f"size {size!r}" in err["detail"]
    assert env.redis.zcard("pr:ml:index") == 0


def test_a_lob_429_without_retry_after_waits_for_its_ratelimit_reset(env: Env) -> None:
    """Lob's create answers carry `ratelimit-reset`: "The time at which the rate limit window resets in UTC
    epoch seconds" (lob-openapi shared/headers/ratelimit.yml, referenced by post_postcard.yml)."""
    responses = Path(__file__).resolve().parents[3] / "shared" / "vendor-specs" / "lob" / "resources" / "postcards"
    if responses.is_dir():
        assert "ratelimit-reset" in (responses / "responses" / "post_postcard.yml").read_text()
    reset = int(time.time()) + 40
    env.lob.script.append(Reply(429, {"error": {"message": "Rate limit exceeded.", "status_code": 429,
                                                "code": "rate_limit_exceeded"}},
                                {"ratelimit-limit": "150", "ratelimit-remaining": "0", "ratelimit-reset": str(reset)}))
    mid = env.post_mailing(mailing("lob")).json()["mailing_id"]
    env.work()
    view = env.get_mailing(mid).json()
    assert view["status"] == "queued" and view["http_status"] == 429
    [(due_id, due)] = env.due()
    assert due_id == mid and due >= env.clock() + 38  # not the 0.2 s base delay: Lob said when
    env.clock.advance(41)
    env.work()
    assert env.get_mailing(mid).json()["status"] == "created" and len(env.lob.pieces) == 1


def test_lob_merge_variables_over_25000_characters_are_a_400(env: Env) -> None:
    """Lob: "If you call `JSON.stringify` on your object, it can be no longer than 25,000 characters"."""
    assert "it can be no longer than 25,000 characters" in RULES.variables_text
    big = {"note": "x" * 25_000}
    err = assert_error(env.post_mailing(mailing("lob", merge_variables=big)), 400, "invalid_mailing")
    assert "25,000" in err["detail"]
    fits = {"note": "x" * 24_900}
    assert env.post_mailing(mailing("lob", merge_variables=fits), key="k2").status_code == 202
    assert env.work() == 1 and env.lob.violations == [] and len(env.lob.pieces) == 1
    assert env.post_mailing(mailing("pg", merge_variables=big), key="k3").status_code == 202  # no PostGrid limit


@pytest.mark.parametrize("provider", ["pg", "lob"])
def test_a_destinations_postcard_size_is_not_forced_on_a_letter(make_env, provider: str) -> None:
    name = "pg" if provider == "pg" else "lob"
    env = make_env({"destinations": {name: {"size": "6x4" if provider == "pg" else "4x6"}}})
    assert env.post_mailing(mailing(provider, "letter", **{"from": SENDER})).status_code == 202
    assert env.work() == 1
    stand_in = env.postgrid if provider == "pg" else env.lob
    assert stand_in.violations == [] and len(stand_in.pieces) == 1
    [create] = [r for r in stand_in.requests if r.method == "POST"]
    assert "size" not in create.json()
