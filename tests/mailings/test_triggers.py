"""POST /v1/triggers/{name}: token or Standard Webhooks auth, mapping, where, cooldown, idempotency, dry run."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.mailings.conftest import TRIGGER_TOKEN, Env
from tests.receiver.harness import assert_error
from tests.support import signing

WHSEC = signing.make_whsec(b"trigger-secret")


def hubspot_workflow(contact_id: int = 901, **props: Any) -> dict[str, Any]:
    """What a HubSpot workflow "Send a webhook" action posts for a contact (properties flattened)."""
    properties = {"firstname": "Ada", "lastname": "Lovelace", "email": "ada@example.com",
                  "address": "145 Mulberry St", "city": "New York", "state": "NY", "zip": "10013", "country": "US",
                  "lifecyclestage": "customer", **props}
    return {"objectId": contact_id, "objectType": "CONTACT", "portalId": 4440001, "occurredAt": 1764579600000,
            "properties": properties}


def shopify_checkout(checkout_id: int = 35500111, **over: Any) -> dict[str, Any]:
    """A Shopify `checkouts/update` payload (abandoned cart)."""
    body = {"id": checkout_id, "token": "c1d2e3f4a5b6", "email": "grace@example.com", "completed_at": None,
            "abandoned_checkout_url": "https://shop.example/checkouts/c1d2e3f4a5b6/recover",
            "total_price": "89.00", "currency": "USD", "customer": {"id": 7001, "first_name": "Grace"},
            "shipping_address": {"first_name": "Grace", "last_name": "Hopper", "address1": "1 Navy Way",
                                 "address2": "Unit 5", "city": "Arlington", "province_code": "VA", "zip": "22202",
                                 "country_code": "US"}}
    return {**body, **over}


HUBSPOT_TRIGGER = {
    "name": "hubspot-winback", "provider": "pg", "kind": "postcard", "token": TRIGGER_TOKEN,
    "idempotency_key": "{objectId}-{occurredAt}", "where": {"properties.lifecyclestage": ["customer", "lead"]},
    "map": {"to": {"name": "{properties.firstname} {properties.lastname}", "address_line1": "{properties.address}",
                   "city": "{properties.city}", "region": "{properties.state}", "postal_code": "{properties.zip}",
                   "country": "{properties.country}", "email": "{properties.email}"},
            "metadata": {"hubspot_contact_id": "{objectId}"}, "merge_variables": {"first_name": "{properties.firstname}"},
            "campaign_id": "winback"},
}
SHOPIFY_TRIGGER = {
    "name": "abandoned-cart", "provider": "lob", "kind": "postcard", "token": TRIGGER_TOKEN, "secrets": [WHSEC],
    "idempotency_key": "checkout-{id}", "cooldown": "30 days", "where": {"shipping_address.country_code": ["US", "CA"]},
    "map": {"to.name": "{shipping_address.first_name} {shipping_address.last_name}",
            "to.address_line1": "{shipping_address.address1}", "to.address_line2": "{shipping_address.address2}",
            "to.city": "{shipping_address.city}", "to.region": "{shipping_address.province_code}",
            "to.postal_code": "{shipping_address.zip}", "to.country": "{shipping_address.country_code}",
            "to.email": "{email}", "metadata.shopify_customer_id": "{customer.id}", "metadata.checkout": "{token}",
            "merge_variables.recover_url": "{abandoned_checkout_url}", "merge_variables.total": "{total_price}",
            "campaign_id": "abandoned-cart"},
}


@pytest.fixture
def tenv(make_env: Callable[..., Env]) -> Env:
    return make_env({"triggers": [HUBSPOT_TRIGGER, SHOPIFY_TRIGGER]})


def test_hubspot_workflow_webhook_becomes_a_postgrid_postcard_for_that_contact(tenv: Env) -> None:
    resp = tenv.fire("hubspot-winback", hubspot_workflow())
    assert resp.status_code == 202, resp.text
    mid = resp.json()["mailing_id"]
    tenv.work()
    view = tenv.get_mailing(mid).json()
    assert view["status"] == "created" and view["trigger"] == "hubspot-winback"
    assert view["origin"] == "trigger:hubspot-winback"
    body = tenv.postgrid.requests[-1].json()
    assert tenv.postgrid.violations == []
    assert body["to"]["firstName"] == "Ada" and body["to"]["addressLine1"] == "145 Mulberry St"
    assert body["metadata"] == {"hubspot_contact_id": "901", "campaign_id": "winback", "postrelay_mailing": mid}
    assert body["mergeVariables"] == {"first_name": "Ada"}


def test_shopify_abandoned_checkout_becomes_a_lob_postcard_once_per_checkout_and_recipient(tenv: Env) -> None:
    first = tenv.fire("abandoned-cart", shopify_checkout())
    assert first.status_code == 202
    again = tenv.fire("abandoned-cart", shopify_checkout(total_price="95.00"))  # checkouts/update fires repeatedly
    assert again.json()["mailing_id"] == first.json()["mailing_id"] and again.json()["replayed"] is True
    other_cart = tenv.fire("abandoned-cart", shopify_checkout(checkout_id=35500222))
    assert other_cart.status_code == 200
    assert other_cart.json() == {"mailing_id": None, "status": "skipped", "reason": "cooldown",
                                 "previous_mailing_id": first.json()["mailing_id"]}
    neighbour = shopify_checkout(checkout_id=35500333)
    neighbour["shipping_address"] = {**neighbour["shipping_address"], "address1": "3 Navy Way"}
    assert tenv.fire("abandoned-cart", neighbour).status_code == 202
    tenv.work()
    assert tenv.lob.violations == [] and len(tenv.lob.pieces) == 2
    body = json.loads(next(r for r in tenv.lob.requests if r.method == "POST").body)
    assert body["to"]["address_line2"] == "Unit 5"
    assert body["metadata"]["shopify_customer_id"] == "7001"
    assert body["merge_variables"] == {"recover_url": "https://shop.example/checkouts/c1d2e3f4a5b6/recover",
                                       "total": "89.00"}


def test_where_filter_ignores_payloads_that_do_not_match(tenv: Env) -> None:
    resp = tenv.fire("hubspot-winback", hubspot_workflow(lifecyclestage="subscriber"))
    assert resp.status_code == 200 and resp.json() == {"mailing_id": None, "status": "ignored", "reason": "where"}
    assert tenv.redis.zcard("pr:ml:index") == 0


def test_standard_webhooks_signature_authenticates_a_trigger(tenv: Env) -> None:
    body, headers = signing.generic_signed(shopify_checkout(), WHSEC, "msg_cart_1", tenv.clock())
    resp = tenv.svc.http.post("/v1/triggers/abandoned-cart", content=body, headers=headers)
    assert resp.status_code == 202, resp.text
    body, headers = signing.generic_signed(shopify_checkout(), signing.make_whsec(b"wrong"), "msg_cart_2",
                                           tenv.clock())
    assert_error(tenv.svc.http.post("/v1/triggers/abandoned-cart", content=body, headers=headers), 401,
                 "invalid_signature")


def test_trigger_auth_and_bad_payloads_get_clear_errors(tenv: Env) -> None:
    assert_error(tenv.fire("hubspot-winback", hubspot_workflow(), token="wrong-token-0123456789"), 401, "invalid_token")
    assert_error(tenv.svc.http.post("/v1/triggers/hubspot-winback", json=hubspot_workflow()), 401, "missing_token")
    assert_error(tenv.fire("nope", {}), 404, "unknown_trigger")
    assert_error(tenv.fire("hubspot-winback", [1, 2]), 400, "invalid_payload")
    err = assert_error(tenv.fire("hubspot-winback", hubspot_workflow(address="")), 400, "invalid_mailing")
    assert "to.address_line1" in err["detail"]
    ok = tenv.svc.http.post("/v1/triggers/hubspot-winback", json=hubspot_workflow(),
                            headers={"X-Trigger-Token": TRIGGER_TOKEN})
    assert ok.status_code == 202
    assert tenv.redis.zcard("pr:ml:index") == 1


def test_dry_run_renders_and_stores_the_request_without_sending(make_env: Callable[..., Env]) -> None:
    env = make_env({"triggers": [{**HUBSPOT_TRIGGER, "dry_run": True}]})
    resp = env.fire("hubspot-winback", hubspot_workflow())
    assert resp.status_code == 202 and resp.json()["dry_run"] is True
    env.work()
    view = env.get_mailing(resp.json()["mailing_id"]).json()
    assert view["status"] == "dry_run" and view["piece_id"] is None
    assert view["rendered"]["to"]["firstName"] == "Ada"
    assert view["rendered"]["metadata"]["postrelay_mailing"] == view["mailing_id"]
    assert env.postgrid.requests == []


def test_per_trigger_cap(make_env: Callable[..., Env]) -> None:
    env = make_env({"triggers": [{**HUBSPOT_TRIGGER, "max_per_day": 2}]})
    ids = [env.fire("hubspot-winback", hubspot_workflow(contact_id=900 + i)).json()["mailing_id"] for i in range(4)]
    env.work()
    statuses = [env.get_mailing(mid).json()["status"] for mid in ids]
    assert statuses.count("created") == 2 and statuses.count("failed") == 2
    assert "trigger_max_per_day" in env.get_mailing(ids[statuses.index("failed")]).json()["reason"]
