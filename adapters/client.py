"""The HTTP client every adapter of a worker shares: httpx's API, the lean transport, no cookie jar.

A relay sends each delivery on its own: nothing a CRM sets as a cookie should ride along with a later
delivery (to that CRM or, through a shared jar, anywhere else). httpx has no switch for that, so the client
exposes an always-empty jar; it also saves the cookie parsing httpx does on every response (~7% of a
worker's CPU per delivery, measured with py-spy).

Every request says who sends it: `User-Agent: postrelay/<version>` (the installed package's version), so a
vendor's logs and support can tell postrelay's calls apart.
"""

from __future__ import annotations

from typing import Any

import httpx

from postrelay.adapters.transport import StdlibTransport
from postrelay.core.version import USER_AGENT


class _NoCookies(httpx.Cookies):
    """A jar that never keeps anything."""

    def extract_cookies(self, response: httpx.Response) -> None:
        """Ignore `Set-Cookie`."""

    def set_cookie_header(self, request: httpx.Request) -> None:
        """Send no stored cookie."""


class RelayClient(httpx.Client):
    """`httpx.Client` whose cookie jar stays empty (cookies passed to a single request still go out)."""

    @property
    def cookies(self) -> httpx.Cookies:
        """Always empty."""
        return _NoCookies()

    @cookies.setter
    def cookies(self, value: Any) -> None:
        pass


def relay_client(timeout: float) -> httpx.Client:
    """The shared client: `timeout` per network operation, no redirects, the `http.client` transport, and
    `User-Agent: postrelay/<version>` on every request."""
    return RelayClient(timeout=timeout, follow_redirects=False, transport=StdlibTransport(),
                       headers={"User-Agent": USER_AGENT})
