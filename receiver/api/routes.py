"""The JSON API's routes, in one list (`receiver.app` mounts them beside the webhooks)."""

from __future__ import annotations

from starlette.routing import Route

from receiver.api import campaigns, mailpieces


def api_routes() -> list[Route]:
    """Every `/v1/…` route of the read and operate API."""
    return [
        Route("/v1/mailpieces", mailpieces.list_mailpieces, methods=["GET"]),
        Route("/v1/mailpieces/{source}/{mailpiece_id:path}", mailpieces.get_mailpiece, methods=["GET"]),
        Route("/v1/campaigns", campaigns.list_campaigns, methods=["GET"]),
        Route("/v1/campaigns/{campaign_id}/mailpieces.csv", campaigns.campaign_csv, methods=["GET"]),
        Route("/v1/campaigns/{campaign_id}", campaigns.get_campaign, methods=["GET"]),
    ]
