"""A mailing with a tracking link: minted before the piece, printed through the merge variables `purl` and
`qr_url`, bound to the piece, one link per mailing across retries; visits land on the piece with the CRM keys."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from postrelay.cli import main
from postrelay.core import keys
from postrelay.core.events import CanonicalEvent, Mailpiece, Recipient
from postrelay.core.stores import mailings as store
from postrelay.workers.followups import FollowupHandler, Scheduler
from postrelay.workers.mailings import Creator
from tests.mailings.conftest import LOB_KEY, SENDER, Env, mailing, mailing_config
from tests.mailings.test_triggers import HUBSPOT_TRIGGER, hubspot_workflow
from tests.receiver.harness import assert_error
from tests.receiver.links_support import AUTH, BASE_URL, LINKS, apply_visits, link_record, visit
from tests.support.http_server import Reply
from tests.support.processes import write_config
from tests.support.providers import LobStandIn
from tests.workers.conftest import dispatch, push

LINK = {"target_url": "https://shop.example.com/comeback", "ref": "crm-901", "utm": {"source": "postcard"}}


@pytest.fixture
def lenv(make_env: Callable[..., Env]) -> Env:
    return make_env({"links": LINKS})


def link_tokens(env: Env) -> list[str]:
    """Every link stored in Redis."""
    head, _, tail = keys.link("\0").partition("\0")
    found = {k.decode() for k in env.redis.scan_iter(match=head + "*")}
    return sorted(k[len(head):-len(tail)] for k in found if k.endswith(tail) and ":" not in k[len(head):])


def create_body(env: Env, provider: str) -> dict[str, Any]:
    stand_in = env.postgrid if provider == "pg" else env.lob
    assert stand_in.violations == []
    return next(r for r in reversed(stand_in.requests) if r.method == "POST").json()


def variables(body: dict[str, Any], provider: str) -> dict[str, Any]:
    return dict(body["mergeVariables" if provider == "pg" else "merge_variables"])


@pytest.mark.parametrize("provider", ["pg", "lob"])
def test_link_reaches_the_provider_as_merge_variables_and_the_visit_lands_on_the_piece(lenv: Env,
                                                                                      provider: str) -> None:
    resp = lenv.post_mailing(mailing(provider, link=LINK), key="linked-1")
    assert resp.status_code == 202, resp.text
    mid = resp.json()["mailing_id"]
    assert lenv.get_mailing(mid).json()["link"] is None  # minted by the worker, just before the piece
    assert lenv.work() == 1

    view = lenv.get_mailing(mid).json()
    assert view["status"] == "created"
    link = view["link"]
    token = link["token"]
    assert link["url"] == f"{BASE_URL}/t/{token}"
    assert link["qr_png_url"] == f"{BASE_URL}/v1/links/{token}/qr.png"
    body = create_body(lenv, provider)
    assert variables(body, provider) == {"discount_code": "COMEBACK10", "purl": link["url"],
                                         "qr_url": link["qr_png_url"]}
    assert body["metadata"]["postrelay_link"] == token and body["metadata"]["postrelay_mailing"] == mid
    ptype = "postgrid" if provider == "pg" else "lob"
    shown = lenv.svc.http.get(f"/v1/links/{token}", headers=AUTH).json()
    assert shown["mailpiece"] == {"source": ptype, "id": view["piece_id"]}
    assert shown["target_url"] == "https://shop.example.com/comeback?utm_source=postcard"
    assert shown["campaign_id"] == "winback"  # the mailing's campaign, as the link named none
    assert link_tokens(lenv) == [token]

    # the recipient scans the QR code: a visit of the piece, with the mailing's CRM keys
    assert visit(lenv.svc, token).status_code == 302
    apply_visits(lenv.svc)
    events = lenv.svc.get_piece(ptype, view["piece_id"]).json()["events"]
    [opened] = [e for e in events if e["type"] == "purl_opened"]
    assert opened["mailpiece"]["id"] == view["piece_id"] and opened["mailpiece"]["kind"] == "postcard"
    assert opened["metadata"]["hubspot_contact_id"] == "901" and opened["metadata"]["deal_id"] == "D-17"
    assert opened["metadata"]["postrelay_mailing"] == mid and opened["metadata"]["ref"] == "crm-901"
    assert opened["recipient"]["email"] == "ada@example.com"


def test_retries_and_replays_never_mint_a_second_link(lenv: Env) -> None:
    lenv.postgrid.script = [Reply(503, {"error": {"message": "busy"}})]
    resp = lenv.post_mailing(mailing("pg", link=LINK), key="retry-1")
    mid = resp.json()["mailing_id"]
    lenv.work()
    first = lenv.get_mailing(mid).json()
    assert first["status"] == "queued" and first["link"] is not None  # minted, the create failed: retried
    assert lenv.post_mailing(mailing("pg", link=LINK), key="retry-1").json()["replayed"] is True
    lenv.clock.advance(5)
    lenv.work()
    view = lenv.get_mailing(mid).json()
    assert view["status"] == "created" and view["link"] == first["link"]
    posts = [r.json() for r in lenv.postgrid.requests if r.method == "POST"]
    assert len(posts) == 2 and {p["mergeVariables"]["purl"] for p in posts} == {first["link"]["url"]}
    assert link_tokens(lenv) == [first["link"]["token"]]
    assert link_record(lenv.svc, first["link"]["token"])["mailing"] == mid


def test_cli_show_names_the_link(lenv: Env, tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path / "c.toml", mailing_config(redis_url, lenv.postgrid.url, lenv.lob.url,
                                                              {"links": LINKS}))
    mid = lenv.post_mailing(mailing("pg", link=LINK), key="cli-1").json()["mailing_id"]
    lenv.work()
    link = lenv.get_mailing(mid).json()["link"]
    assert main(["mailings", "show", mid, "--config", str(config)]) == 0
    assert f"link            {link['url']}  (token {link['token']})" in capsys.readouterr().out


def test_link_requests_that_cannot_be_honoured_are_400s(make_env: Callable[..., Env]) -> None:
    plain = make_env()
    err = assert_error(plain.post_mailing(mailing(link=LINK)), 400, "links_not_configured")
    assert "[links] base_url and allowed_hosts" in err["detail"]
    env = make_env({"links": LINKS})
    err = assert_error(env.post_mailing(mailing(link={"target_url": "https://evil.example/x"}), key="k2"),
                       400, "invalid_mailing")
    assert err["detail"].startswith("link.target_url")
    taken = mailing(link=LINK, merge_variables={"purl": "https://mine.example/x"})
    err = assert_error(env.post_mailing(taken, key="k3"), 400, "merge_variable_conflict")
    assert "merge_variables.purl" in err["detail"]
    bound = mailing(link={**LINK, "mailpiece": {"source": "postgrid", "id": "postcard_1"}})
    assert "mailpiece" in assert_error(env.post_mailing(bound, key="k4"), 400, "invalid_mailing")["detail"]
    unknown = mailing(link={**LINK, "colour": "red"})
    assert "link.colour" in assert_error(env.post_mailing(unknown, key="k5"), 400, "invalid_mailing")["detail"]
    crowded = mailing(link=LINK, metadata={f"k{i}": "v" for i in range(19)})
    assert "at most 17 keys" in assert_error(env.post_mailing(crowded, key="k6"), 400,  # + campaign_id, link, id
                                                 "invalid_mailing")["detail"]
    past = mailing(link={**LINK, "expires_at": "2020-01-01T00:00:00Z"})
    assert "link.expires_at" in assert_error(env.post_mailing(past, key="k7"), 400, "invalid_mailing")["detail"]
    assert env.redis.zcard(store.INDEX) == 0 and link_tokens(env) == []


LINKED_TRIGGER = {**HUBSPOT_TRIGGER, "link": {"target_url": "https://shop.example.com/winback/{objectId}",
                                              "ref": "hs-{objectId}", "utm": {"campaign": "{properties.lifecyclestage}"}}}


def test_trigger_link_table_renders_from_the_payload(make_env: Callable[..., Env]) -> None:
    env = make_env({"links": LINKS, "triggers": [LINKED_TRIGGER]})
    mid = env.fire("hubspot-winback", hubspot_workflow(contact_id=4242)).json()["mailing_id"]
    env.work()
    view = env.get_mailing(mid).json()
    assert view["status"] == "created" and view["request"]["link"]["ref"] == "hs-4242"
    shown = env.svc.http.get(f"/v1/links/{view['link']['token']}", headers=AUTH).json()
    assert shown["target_url"] == "https://shop.example.com/winback/4242?utm_campaign=customer"
    assert create_body(env, "pg")["mergeVariables"]["purl"] == view["link"]["url"]


def test_dry_run_renders_the_link_and_sends_nothing(make_env: Callable[..., Env]) -> None:
    env = make_env({"links": LINKS, "triggers": [{**LINKED_TRIGGER, "dry_run": True}]})
    mid = env.fire("hubspot-winback", hubspot_workflow()).json()["mailing_id"]
    env.work()
    view = env.get_mailing(mid).json()
    assert view["status"] == "dry_run" and env.postgrid.requests == []
    assert view["rendered"]["mergeVariables"]["purl"] == view["link"]["url"]
    assert view["rendered"]["mergeVariables"]["qr_url"] == view["link"]["qr_png_url"]
    assert view["rendered"]["metadata"]["postrelay_link"] == view["link"]["token"]
    assert env.svc.http.get(f"/v1/links/{view['link']['token']}", headers=AUTH).json()["mailpiece"] is None


def test_a_trigger_link_without_links_configured_is_a_config_error(make_env: Callable[..., Env]) -> None:
    with pytest.raises(Exception, match=r"triggers\[0\]\.link: tracking links need \[links\]"):
        make_env({"triggers": [LINKED_TRIGGER]})


def test_a_link_the_worker_cannot_mint_fails_the_mailing_with_the_reason(make_env: Callable[..., Env]) -> None:
    env = make_env({"links": LINKS})
    mid = env.post_mailing(mailing(link=LINK)).json()["mailing_id"]
    env.rt.config.links.allowed_hosts = ["elsewhere.example"]  # the worker's config changed meanwhile
    env.work()
    view = env.get_mailing(mid).json()
    assert view["status"] == "failed" and "link.target_url" in view["reason"]
    assert env.postgrid.requests == [] and link_tokens(env) == []


def test_followup_with_a_link_table_prints_a_link_bound_to_the_new_piece(make_runtime, clock) -> None:
    event = CanonicalEvent.build(
        source="postgrid", source_event_id="event_fu_link", type="delivered",
        occurred_at=datetime.fromisoformat("2026-11-20T10:00:00+00:00"),
        mailpiece=Mailpiece(id="postcard_first", kind="postcard", country="US", campaign_id="spring"),
        recipient=Recipient(name="Ada Lovelace", address_line1="145 Mulberry St", city="New York", region="NY",
                            postal_code="10013", country="US", email="ada@example.com"),
        metadata={"hubspot_contact_id": "901"})
    with LobStandIn(LOB_KEY) as lob:
        rt = make_runtime({
            "links": LINKS,
            "destinations": {"second": {"type": "lob", "api_key": LOB_KEY, "base_url": lob.url, "kind": "postcard",
                                        "front_template": "tmpl_f", "back_template": "tmpl_b",
                                        "from_address": SENDER}},
            "followups": [{"name": "second-touch", "after": "delivered", "do": "second",
                           "link": {"target_url": "https://shop.example.com/again/{metadata.hubspot_contact_id}",
                                    "ref": "{metadata.hubspot_contact_id}"}}]})
        clock.now = datetime.fromisoformat("2026-11-20T10:00:05+00:00").timestamp()
        push(rt, event)
        dispatch(rt, handlers=[FollowupHandler(rt)])
        assert Scheduler(rt).run_once() == 1
        [queued] = store.listing(rt.redis)
        Creator(rt).run_once()
        view = store.get(rt.redis, queued["mailing_id"])
        assert view is not None and view["status"] == "created" and lob.violations == []
        body = lob.requests[-1].json()
        assert body["merge_variables"]["purl"] == view["link"]["url"]
        assert body["metadata"]["postrelay_link"] == view["link"]["token"]
        record = json.loads(rt.redis.get(keys.link(view["link"]["token"])))
        assert record["target"] == "https://shop.example.com/again/901" and record["ref"] == "901"
        assert (record["piece_source"], record["piece_id"]) == ("lob", view["piece_id"])


def test_a_followup_link_needs_links_and_a_mailer_destination(make_env: Callable[..., Env]) -> None:
    rule = {"name": "nudge", "after": "delivered", "do": "hook", "link": {"target_url": "https://shop.example.com/"}}
    hook = {"hook": {"type": "webhook", "url": "https://hooks.example.com/x", "secret": "s" * 32}}
    with pytest.raises(Exception, match=r"followups\[0\]\.link: only a follow-up whose `do` is a postgrid or lob"):
        make_env({"links": LINKS, "destinations": hook, "followups": [rule]})
    with pytest.raises(Exception, match=r"followups\[0\]\.link: tracking links need \[links\]"):
        make_env({"followups": [{**rule, "do": "pg"}]})
    with pytest.raises(Exception, match=r"link\.target_url: required"):
        make_env({"links": LINKS, "followups": [{**rule, "do": "pg", "link": {"ref": "x"}}]})
