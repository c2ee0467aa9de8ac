"""Mail events trigger mailings too: a follow-up whose `do` is a postgrid or lob destination is a mailing."""

from __future__ import annotations

from datetime import datetime

from postrelay.core.events import CanonicalEvent, Mailpiece, Recipient
from postrelay.core.stores import mailings as store
from postrelay.workers.followups import FollowupHandler, Scheduler
from postrelay.workers.mailings import Creator
from tests.mailings.conftest import LOB_KEY, SENDER
from tests.support.providers import LobStandIn
from tests.workers.conftest import dispatch, push


def _event(address: str | None = "145 Mulberry St") -> CanonicalEvent:
    return CanonicalEvent.build(
        source="postgrid", source_event_id="event_fu_1", type="delivered",
        occurred_at=datetime.fromisoformat("2026-11-20T10:00:00+00:00"),
        mailpiece=Mailpiece(id="postcard_first", kind="postcard", country="US", campaign_id="spring"),
        recipient=Recipient(name="Ada Lovelace", address_line1=address, city="New York", region="NY",
                            postal_code="10013", country="US", email="ada@example.com"),
        metadata={"hubspot_contact_id": "901", "offer": "SPRING20", "postrelay": {"live": False}})


def _config(lob_url: str) -> dict:
    return {"destinations": {"second": {"type": "lob", "api_key": LOB_KEY, "base_url": lob_url, "kind": "postcard",
                                        "front_template": "tmpl_f", "back_template": "tmpl_b",
                                        "from_address": SENDER}},
            "followups": [{"name": "second-touch", "after": "delivered", "delay": "0", "do": "second"}]}


def test_followup_to_a_lob_destination_creates_one_mailing_linked_to_the_first_piece(make_runtime, clock) -> None:
    with LobStandIn(LOB_KEY) as lob:
        rt = make_runtime(_config(lob.url))
        clock.now = datetime.fromisoformat("2026-11-20T10:00:05+00:00").timestamp()
        push(rt, _event())
        dispatch(rt, handlers=[FollowupHandler(rt)])
        assert Scheduler(rt).run_once() == 1
        assert Scheduler(rt).run_once() == 0  # fired once
        [view] = store.listing(rt.redis)
        assert view["origin"] == "followup:second-touch" and view["status"] == "queued"
        Creator(rt).run_once()
        assert lob.violations == [] and len(lob.pieces) == 1
        body = lob.requests[-1].json()
        assert body["metadata"] == {"hubspot_contact_id": "901", "offer": "SPRING20", "campaign_id": "spring",
                                    "postrelay_previous_mailpiece": "postcard_first",
                                    "postrelay_followup": "second-touch", "postrelay_mailing": view["mailing_id"]}
        assert body["merge_variables"] == {"hubspot_contact_id": "901", "offer": "SPRING20"}
        assert store.get(rt.redis, view["mailing_id"])["status"] == "created"


def test_followup_for_a_recipient_without_an_address_is_a_failed_mailing(make_runtime, clock) -> None:
    with LobStandIn(LOB_KEY) as lob:
        rt = make_runtime(_config(lob.url))
        clock.now = datetime.fromisoformat("2026-11-20T10:00:05+00:00").timestamp()
        push(rt, _event(address=None))
        dispatch(rt, handlers=[FollowupHandler(rt)])
        Scheduler(rt).run_once()
        [view] = store.listing(rt.redis)
        assert view["status"] == "failed" and "address_line1" in view["reason"]
        Creator(rt).run_once()
        assert lob.requests == []
