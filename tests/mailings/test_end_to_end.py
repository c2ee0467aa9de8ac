"""End to end with real processes: a HubSpot- and a Shopify-shaped trigger become pieces, and those pieces'
webhooks (PostGrid, Lob) reach a HubSpot stand-in for the right contact, found without a search."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from tests.mailings.conftest import TRIGGER_TOKEN, mailing_config
from tests.mailings.test_triggers import HUBSPOT_TRIGGER, SHOPIFY_TRIGGER, hubspot_workflow, shopify_checkout
from tests.receiver.harness import API_TOKEN, LOB_SECRETS, PG_SECRETS
from tests.support import payloads, signing
from tests.support.http_server import LocalHTTPServer, Recorded, Reply
from tests.support.processes import ReceiverProcess, WorkerProcess, wait_for, write_config
from tests.support.providers import LobStandIn, PostGridStandIn

HUBSPOT_TOKEN = "pat-na1-hubspot-standin-0123456789"


def hubspot(req: Recorded) -> Reply:
    """HubSpot's contacts and notes APIs, as far as the adapter uses them."""
    if req.method == "PATCH" and req.path.startswith("/crm/v3/objects/contacts/"):
        key = req.path.rsplit("/", 1)[1]
        return Reply(200, {"id": "7001" if "@" in key else key, "properties": req.json()["properties"]})
    if req.method == "POST" and req.path == "/crm/v3/objects/notes":
        return Reply(201, {"id": f"note_{len(req.body)}"})
    return Reply(404, {"message": "not found"})


def mailing_view(url: str, mid: str) -> dict[str, Any]:
    return httpx.get(f"{url}/v1/mailings/{mid}", headers={"Authorization": f"Bearer {API_TOKEN}"}).json()


def test_triggers_to_pieces_to_webhooks_to_the_right_hubspot_contact(
        redis_url: str, tmp_path: Path, postgrid: PostGridStandIn, lob: LobStandIn) -> None:
    with LocalHTTPServer(hubspot) as crm:
        data = mailing_config(redis_url, postgrid.url, lob.url, {
            "triggers": [HUBSPOT_TRIGGER, SHOPIFY_TRIGGER],
            "destinations": {"crm": {"type": "hubspot", "token": HUBSPOT_TOKEN, "base_url": crm.url}},
            "routes": [{"events": ["*"], "to": ["crm"]}],
        })
        config = write_config(tmp_path / "postrelay.toml", data)
        receiver = ReceiverProcess(config, tmp_path / "receiver.log").start()
        worker = WorkerProcess(config, tmp_path / "worker.log").start()
        auth = {"Authorization": f"Bearer {TRIGGER_TOKEN}"}
        try:
            hs = httpx.post(f"{receiver.url}/v1/triggers/hubspot-winback", json=hubspot_workflow(), headers=auth)
            cart = httpx.post(f"{receiver.url}/v1/triggers/abandoned-cart", json=shopify_checkout(), headers=auth)
            assert hs.status_code == 202 and cart.status_code == 202, (hs.text, cart.text)
            hs_id, cart_id = hs.json()["mailing_id"], cart.json()["mailing_id"]
            assert wait_for(lambda: mailing_view(receiver.url, hs_id)["status"] == "created"
                            and mailing_view(receiver.url, cart_id)["status"] == "created", 30, 0.1), worker.log()
            [pg_piece], [lob_piece] = postgrid.pieces, lob.pieces

            # the providers report progress; their events echo the metadata postrelay wrote into the pieces
            order = {**pg_piece, "status": "processed_for_delivery"}
            event = payloads.postgrid_event("postcard.updated", order, event_id="event_e2e_1",
                                            updated_fields={"status": "processed_for_delivery"})
            body, headers = signing.postgrid_json(event, PG_SECRETS[0], time.time())
            assert httpx.post(f"{receiver.url}/webhooks/postgrid", content=body, headers=headers).status_code == 200
            scan = payloads.lob_tracking_event("Mailed", "2026-12-02T10:00:00.000Z")
            lob_body = {**payloads.lob_mailpiece("postcard", lob_piece["id"], tracking_events=[scan]),
                        "metadata": lob_piece["metadata"], "to": {**lob_piece["to"], "address_country": "US"}}
            body, headers = signing.lob_signed(payloads.lob_event("postcard.mailed", lob_body), LOB_SECRETS[0],
                                               time.time())
            assert httpx.post(f"{receiver.url}/webhooks/lob", content=body, headers=headers).status_code == 200

            def both_patched() -> bool:
                return len([r for r in crm.requests if r.method == "PATCH"]) >= 2
            assert wait_for(both_patched, 30, 0.1), worker.log()[-3000:]
            assert wait_for(lambda: mailing_view(receiver.url, hs_id)["stage"] == "mailed", 10, 0.1)
            assert mailing_view(receiver.url, cart_id)["stage"] == "mailed"
        finally:
            worker.terminate()
            receiver.terminate()
    patches = {r.path: r for r in crm.requests if r.method == "PATCH"}
    # HubSpot's contact by the id the trigger put in the metadata; Shopify's by its email: no search either way
    assert set(patches) == {"/crm/v3/objects/contacts/901", "/crm/v3/objects/contacts/grace@example.com"}
    assert patches["/crm/v3/objects/contacts/grace@example.com"].query == {"idProperty": ["email"]}
    for r in patches.values():
        assert r.headers["authorization"] == f"Bearer {HUBSPOT_TOKEN}"
        assert r.json()["properties"]["postrelay_last_mail_event"] == "mailed"
    assert patches["/crm/v3/objects/contacts/901"].json()["properties"]["postrelay_mail_campaign"] == "winback"
    assert not [r for r in crm.requests if "search" in r.path]
    assert postgrid.violations == [] and lob.violations == []
