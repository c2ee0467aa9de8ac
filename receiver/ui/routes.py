"""The console's route table: every page under `[ui] prefix`, and the bare prefix redirecting to it."""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from postrelay.receiver.api.mailings import Mailings
from postrelay.receiver.ui import mailings, operate, pages, signin
from postrelay.receiver.ui.app import HERE, Console, SecurityHeaders, error_handlers


def console_routes(receiver: Any) -> list[BaseRoute]:
    """The console: a Mount at `[ui] prefix`, and the bare prefix redirecting to it (the caller leaves both out
    when `[ui] enabled = false`)."""
    console = Console(receiver)
    routes = [
        Route("/", pages.overview, methods=["GET"]),
        Route("/signin", signin.form, methods=["GET"]),
        Route("/signin", signin.submit, methods=["POST"]),
        Route("/signout", signin.signout, methods=["POST"]),
        Route("/mailpieces", pages.mailpieces, methods=["GET"]),
        Route("/mailpieces/{source}/{mailpiece_id:path}", pages.mailpiece, methods=["GET"]),
        Route("/campaigns", pages.campaigns, methods=["GET"]),
        Route("/campaigns/{campaign_id}/mailpieces.csv", pages.campaign_csv, methods=["GET"]),
        Route("/campaigns/{campaign_id}", pages.campaign, methods=["GET"]),
        Route("/mailings", mailings.mailings, methods=["GET"]),
        Route("/mailings/{mailing_id}", mailings.mailing, methods=["GET"]),
        *operate.routes(),
        Mount("/static", app=StaticFiles(directory=HERE / "static")),
    ]
    app = Starlette(routes=routes, exception_handlers=error_handlers(console))
    app.state.console = console
    app.state.receiver = receiver
    app.state.mailings = Mailings(receiver)
    prefix = console.prefix

    async def to_console(request: Request) -> Response:
        return RedirectResponse(prefix + "/", status_code=307)

    return [Route(prefix, to_console, methods=["GET"]), Mount(prefix, app=SecurityHeaders(app))]
