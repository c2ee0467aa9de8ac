"""Batched Salesforce writes through sObject Collections (real Redis, a loopback Salesforce stand-in)."""

from __future__ import annotations

from typing import Any

import pytest

from postrelay.core import keys
from postrelay.core.events import CanonicalEvent
from postrelay.core.stores import deliveries, dlq
from tests.support.http_server import LocalHTTPServer
from tests.support.salesforce_standin import SalesforceStandIn
from tests.workers.conftest import FakeClock, dispatch, drain, event, promote, push, scheduled

EXT = "Mail_Contact_Id__c"


def config(url: str, **dest: Any) -> dict[str, Any]:
    return {"destinations": {"sf": {"type": "salesforce", "access_token": "00D5g!AQ0token", "instance_url": url,
                                    "batch_size": 200, **dest}},
            "routes": [{"events": ["*"], "to": ["sf"]}],
            "delivery": {"base_delay": 1, "max_delay": 60, "circuit_threshold": 3, "lease": "5s"}}


def done(rt: Any, evs: list[CanonicalEvent]) -> int:
    return sum(bool(rt.redis.exists(keys.delivery_done(deliveries.delivery_key("sf", e.id)))) for e in evs)


@pytest.fixture
def salesforce(clock: FakeClock):
    standin = SalesforceStandIn(clock=clock)
    with LocalHTTPServer(standin) as server:
        standin.url = server.url  # type: ignore[attr-defined]
        yield standin


def test_upsert_by_external_id_and_tasks_in_collections_split_at_200(make_runtime, salesforce):
    rt = make_runtime(config(salesforce.url, batch_size=250, external_id_field=EXT, external_id_metadata_key="mid"))
    evs = [event("returned_to_sender", piece=f"ltr_{i}", metadata={"mid": f"MC-{i}"}) for i in range(250)]
    push(rt, *evs)
    dispatch(rt)
    drain(rt)
    assert salesforce.calls == {f"PATCH /composite/sobjects/Contact/{EXT}": 2, "POST /composite/sobjects": 2}
    assert salesforce.batch_sizes == [200, 50, 200, 50]
    assert salesforce.tasks == {e.id: 1 for e in evs} and done(rt, evs) == 250


def test_by_email_one_query_one_update_and_a_locked_row_retries_alone(make_runtime, salesforce, clock):
    rt = make_runtime(config(salesforce.url))
    evs = [event("processed_for_delivery", piece=f"ltr_{i}", email=f"s{i}@example.com") for i in range(100)]
    ids = salesforce.add_contacts([f"s{i}@example.com" for i in range(99)])  # s99 does not exist
    salesforce.locked = {ids["s7@example.com"]}
    push(rt, *evs)
    dispatch(rt)
    drain(rt)
    assert salesforce.calls == {"GET /query": 1, "PATCH /composite/sobjects": 1}
    assert done(rt, evs) == 98
    [dead] = dlq.entries(rt.redis, "sf")
    assert dead["key"] == deliveries.delivery_key("sf", evs[99].id) and "no Salesforce Contact" in dead["reason"]
    [(key, _)] = scheduled(rt)  # the locked row alone waits for its retry
    assert key == deliveries.delivery_key("sf", evs[7].id)
    salesforce.locked = set()
    clock.advance(5)
    promote(rt)
    drain(rt)
    assert done(rt, evs) == 99
    assert salesforce.fields[ids["s7@example.com"]]["Mail_Stage__c"] == "processed_for_delivery"


def test_updates_of_one_record_collapse_into_the_latest(make_runtime, salesforce):
    rt = make_runtime(config(salesforce.url))
    salesforce.add_contacts(["same@example.com"])
    early = event("delivered", piece="ltr_a", email="same@example.com", occurred="2026-11-20T09:00:00+00:00")
    late = event("mailed", piece="ltr_b", email="same@example.com", occurred="2026-11-21T09:00:00+00:00")
    push(rt, late, early)
    dispatch(rt)
    drain(rt)
    assert salesforce.batch_sizes == [1] and done(rt, [early, late]) == 2
    [fields] = salesforce.fields.values()
    assert fields["Mail_Last_Event__c"] == "mailed"
