"""In front of the router: `GET`/`HEAD /t/{token}` and `/t/{token}/goal` go straight to their endpoint.

Starlette's router tries its routes one regex at a time; the visit routes carry load (like the webhook
routes, which come first), and that search, the route's method check and the scope bookkeeping were about a
tenth of a visit's CPU. `VisitRoutes` leaves the scope exactly as the router would (`router`, `route`,
`endpoint`, `path_params`), so the request log, the metrics and the endpoint see no difference; anything
else (another method, a trailing slash, an empty token, a mounted `root_path`, a websocket) goes to the
router unchanged, which answers it as before (405, 404, ...).
"""

from __future__ import annotations

from starlette.routing import Route, Router
from starlette.types import Receive, Scope, Send

_METHODS = frozenset(("GET", "HEAD"))
_PREFIX = "/t/"


class VisitRoutes:
    """See the module docstring: `open_route` is `/t/{token}`, `goal_route` `/t/{token}/goal`."""

    def __init__(self, router: Router, open_route: Route, goal_route: Route) -> None:
        self.router = router
        self.open_route = open_route
        self.goal_route = goal_route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in _METHODS and not scope.get("root_path"):
            path: str = scope["path"]
            if path.startswith(_PREFIX):
                token, slash, tail = path[len(_PREFIX):].partition("/")
                if token and (not slash or tail == "goal"):
                    route = self.goal_route if slash else self.open_route
                    scope.setdefault("router", self.router)
                    scope["route"] = route
                    scope["endpoint"] = route.endpoint
                    scope["path_params"] = {**scope.get("path_params", {}), "token": token}
                    await route.app(scope, receive, send)
                    return
        await self.router(scope, receive, send)
