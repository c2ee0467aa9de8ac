"""The JSON API's routes, in one list (`receiver.app` mounts them beside the webhooks)."""

from __future__ import annotations

from starlette.routing import Route

from postrelay.receiver.api import campaigns, mailpieces, operate


def api_routes() -> list[Route]:
    """Every `/v1/…` route of the read and operate API."""
    return [
        Route("/v1/mailpieces", mailpieces.list_mailpieces, methods=["GET"]),
        Route("/v1/mailpieces/{source}/{mailpiece_id:path}", mailpieces.get_mailpiece, methods=["GET"]),
        Route("/v1/campaigns", campaigns.list_campaigns, methods=["GET"]),
        Route("/v1/campaigns/{campaign_id}/mailpieces.csv", campaigns.campaign_csv, methods=["GET"]),
        Route("/v1/campaigns/{campaign_id}", campaigns.get_campaign, methods=["GET"]),
        Route("/v1/deliveries", operate.list_deliveries, methods=["GET"]),
        Route("/v1/dlq", operate.list_dlq, methods=["GET"]),
        Route("/v1/dlq/replay", operate.replay_many, methods=["POST"]),
        Route("/v1/dlq/{entry_id:path}/replay", operate.replay_one, methods=["POST"]),
        Route("/v1/destinations/{name}/pause", operate.pause, methods=["POST"]),
        Route("/v1/destinations/{name}/resume", operate.resume, methods=["POST"]),
        Route("/v1/followups", operate.list_followups, methods=["GET"]),
        Route("/v1/followups/{followup_id:path}", operate.cancel_followup, methods=["DELETE"]),
    ]
