"""The `/t/` shortcut in front of the router answers exactly as the router did, and hands it everything else."""

from __future__ import annotations

import pytest

from tests.receiver.harness import Service
from tests.receiver.links_support import BROWSER, links_service, metric, mint, visit

__all__ = ["links_service"]


def _requests(svc: Service, path: str, status: int) -> float:
    return metric(svc, "postrelay_http_requests_total", path=path, status=str(status))


def test_visits_and_goals_are_answered_and_counted_under_their_route(links_service: Service) -> None:
    token = mint(links_service)["token"]
    resp = visit(links_service, token)
    assert resp.status_code == 302 and resp.headers["location"] == "https://shop.example.com/offer"
    goal = visit(links_service, token, goal=True)
    assert goal.status_code == 200 and goal.headers["content-type"] == "image/gif"
    head = visit(links_service, token, method="HEAD")
    assert head.status_code == 302
    assert _requests(links_service, "/t/{token}", 302) == 2
    assert _requests(links_service, "/t/{token}/goal", 200) == 1


@pytest.mark.parametrize(("method", "suffix", "status", "label"), [
    ("POST", "", 405, "/t/{token}"),  # the router's 405, with its Allow header
    ("DELETE", "/goal", 405, "/t/{token}/goal"),
    ("GET", "/", 307, "<unmatched>"),  # a trailing slash is no visit: sent to the address without it
    ("GET", "/goal/", 307, "<unmatched>"),
    ("GET", "/goal/more", 404, "<unmatched>"),
    ("GET", "/other", 404, "<unmatched>"),
])
def test_anything_else_under_t_gets_the_routers_answer(links_service: Service, method: str, suffix: str,
                                                        status: int, label: str) -> None:
    token = mint(links_service)["token"]
    resp = links_service.http.request(method, f"/t/{token}{suffix}", headers={"User-Agent": BROWSER})
    assert resp.status_code == status
    assert resp.headers["content-type"] == "application/json" and "error" in resp.json()
    if status == 405:
        assert set(resp.headers["allow"].replace(" ", "").split(",")) == {"GET", "HEAD"}
    if status == 307:
        assert resp.headers["location"].endswith(f"/t/{token}{suffix.rstrip('/')}")
    assert _requests(links_service, label, status) == 1


def test_an_empty_token_is_not_found(links_service: Service) -> None:
    for path in ("/t/", "/t//goal"):
        resp = links_service.http.get(path, headers={"User-Agent": BROWSER})
        assert resp.status_code == 404 and resp.json()["error"] == "not_found"
