"""`GET /t/{token}` and `GET /t/{token}/goal`: the tracking-link redirect, a plain ASGI endpoint like webhooks.

A visit is answered after its `purl_opened` (`/goal`: `purl_completed`) event is in Redis, through the same
`IngestQueue` as webhooks (one coalesced script call; its marker collapses one client's repeats within
`[links] collapse_window`). The link's record is read through that queue too: the reads of new visits ride in
the same pipeline as the script call of earlier ones, so a visit costs no round trip of its own. The visitor is always answered:
- Redis down or failing: redirected all the same (the link record from this process's cache), the visit
  counted as `missed` in `postrelay_link_visits_total`; a link this process never read goes to
  `[links] fallback_url`, else a small "try again" page;
- HEAD, prefetch and known scanners (`receiver.linkbots`): redirected, no event, counted apart;
- unknown or malformed token: the same 404 for both; expired or revoked: `fallback_url` or a small 410 page;
  a target whose host is no longer in `allowed_hosts` is treated as revoked. Pages are HTML for browsers
  (`Accept: text/html`), the usual JSON error otherwise.
Visitors are told apart by an HMAC of address and User-Agent under a random key replaced every
`visitor_key_rotation` (`receiver.visitors`); neither the address nor the hash is put in an event.
"""

from __future__ import annotations

import logging
import secrets
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

import redis.exceptions

from postrelay.core import keys
from postrelay.core.events import EventType
from postrelay.core.linktargets import host_allowed
from postrelay.core.stores.links import TOKEN_RE, Link, redirect_fields, unbound_visit_json, visit_json
from postrelay.receiver.linkbots import inspect, is_scanner
from postrelay.receiver.requestlog import INFO_KEY
from postrelay.receiver.visitors import VisitorKeys, digest

log = logging.getLogger("postrelay.links")
REDIS_FAILURES = (redis.exceptions.RedisError, OSError)
_PIXEL = (b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00"
          b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;")
_NO_STORE = (b"cache-control", b"no-store")
_TYPES = {"open": EventType.PURL_OPENED, "goal": EventType.PURL_COMPLETED}
_PAGES = {
    404: ("Link not found", "This link does not exist. Check the address, or scan the code again."),
    410: ("Link no longer active", "This link has expired or was withdrawn by its sender."),
    503: ("Please try again", "This link cannot be opened right now. Please try again in a minute."),
}
_CODES = {404: "not_found", 410: "link_gone", 503: "temporarily_unavailable"}
MAX_CACHE = 100_000  # records; the oldest read goes first. (A plain dict's `pop(next(iter(d)))` scans the
# deleted slots at its front: 30 µs a visit on average once full, and more before each resize.)


Answer = tuple[int, list[tuple[bytes, bytes]], bytes]
"""(status, headers, body)."""
Cached = tuple[str, str | None, float | None, float | None, float]
"""A cached link record: (target, goal URL, expires_at, revoked_at, when it was read). Atoms only, so the
garbage collector stops tracking it: 100,000 cached links add nothing to a full collection's work (as
`Link` objects, with their two dicts, they made each one tens of milliseconds longer: a pause every visit
then waited for)."""


def _link(token: str, entry: Cached) -> Link:
    return Link(token=token, target=entry[0], goal_url=entry[1], expires_at=entry[2], revoked_at=entry[3])


def page(status: int, html: bool) -> Answer:
    """A small page (HTML for browsers, else the usual JSON error) for an unusable link."""
    title, text = _PAGES[status]
    if html:
        body = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" '
                f'content="width=device-width"><title>{title}</title></head><body style="font-family:sans-serif;'
                f'max-width:32em;margin:4em auto;padding:0 1em"><h1>{title}</h1><p>{text}</p></body></html>').encode()
        ctype = b"text/html; charset=utf-8"
    else:
        body = b'{"error":"%s","detail":"%s"}' % (_CODES[status].encode(), text.encode())
        ctype = b"application/json"
    headers = [(b"content-type", ctype), (b"content-length", b"%d" % len(body)), _NO_STORE]
    if status == 503:
        headers.append((b"retry-after", b"60"))
    return status, headers, body


def redirect(location: str) -> Answer:
    """302 to `location` (a stored, validated target), never cached so every visit comes back here."""
    return 302, [(b"location", location.encode("ascii")), (b"content-length", b"0"), _NO_STORE], b""


def pixel() -> Answer:
    """A 1x1 transparent GIF (a goal reached on a page that embeds it)."""
    return 200, [(b"content-type", b"image/gif"), (b"content-length", b"%d" % len(_PIXEL)), _NO_STORE], _PIXEL


class LinkVisits:
    """The ASGI endpoint of `GET`/`HEAD /t/{token}` and `/t/{token}/goal` for one `Receiver` (one instance for
    both routes: they share the record cache); `receiver.edge` logs, counts and renders errors around it."""

    def __init__(self, receiver: Any) -> None:
        self.receiver = receiver
        self.config = receiver.config.links
        self.visitors = VisitorKeys(receiver.redis, self.config.visitor_key_rotation)
        self._cache: OrderedDict[str, Cached] = OrderedDict()  # oldest first: eviction is O(1)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        path: str = scope["path"]
        kind = "goal" if path.endswith("/goal") and path.count("/") == 3 else "open"
        status, headers, body = await self.answer(scope, scope["path_params"]["token"], kind,
                                                  scope.setdefault(INFO_KEY, {}))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def forget(self, token: str) -> None:
        """Drop a cached record (after a revocation in this process)."""
        self._cache.pop(token, None)

    async def answer(self, scope: Any, token: str, kind: str, info: dict[str, Any]) -> Answer:
        """The answer to one `/t/` request; records the visit when it is a person's."""
        prom = self.receiver.prom
        agent, html, prefetch = inspect(scope["headers"])
        if not TOKEN_RE.match(token):
            prom.link(kind, "not_found")
            return page(404, html)
        now = self.receiver.clock()
        reason = "head" if scope["method"] == "HEAD" else "prefetch" if prefetch else (
            "scanner" if agent is not None and is_scanner(agent) else None)
        cached = self._cache.get(token)
        if reason is None and (cached is None or now - cached[4] >= self.config.cache_ttl):
            return await self._visit(scope, token, kind, now, agent, html, info, cached)
        link, down = await self._lookup(token, now)
        if link is None:
            return self._unknown(kind, down, html, info)
        info["link"] = token
        if not self._active(link, now):
            return self._gone(kind, html, info)
        if reason is not None:
            prom.link(kind, reason, non_human=True)
            info["link_outcome"] = reason
            return self._target(link, kind)
        outcome = await self._record(link, kind, now, scope, agent)
        prom.link(kind, outcome)
        info["link_outcome"] = outcome
        return self._target(link, kind)

    async def _visit(self, scope: Any, token: str, kind: str, now: float, agent: str | None, html: bool,
                     info: dict[str, Any], cached: Cached | None) -> Answer:
        """A person's visit of a link not in the cache: one round trip checks the link and records the visit
        (`IngestQueue.enqueue_visit`); the event names only the token, the worker adds the rest from the link."""
        prom = self.receiver.prom
        visit_id = f"{token}.{kind}.{secrets.token_hex(8)}"
        event = unbound_visit_json(token, _TYPES[kind], datetime.fromtimestamp(now, UTC), visit_id)
        try:
            marker = await self._marker(token, kind, now, scope, agent, event.id)
            flag, raw = await self.receiver.queue.enqueue_visit(event, marker, keys.link(token), now)
        except REDIS_FAILURES as exc:
            log.warning("link visit not recorded (redis: %s); visitor redirected", type(exc).__name__)
            if cached is None:
                return self._unknown(kind, True, html, info)
            prom.link(kind, "missed")
            info.update(link=token, link_outcome="missed")
            return self._target(_link(token, cached), kind)
        entry = self._remember(token, raw, now)
        if entry is None or flag == "x":
            return self._unknown(kind, False, html, info)
        info["link"] = token
        if flag == "g":
            return self._gone(kind, html, info)
        outcome = "recorded" if flag == "1" else "collapsed"
        prom.link(kind, outcome)
        info["link_outcome"] = outcome
        return _answer(entry[0], entry[1], kind)

    def _active(self, link: Link, now: float) -> bool:
        return link.status(now) == "active" and host_allowed(_host(link.target), self.config.allowed_hosts)

    def _target(self, link: Link, kind: str) -> Answer:
        return _answer(link.target, link.goal_url, kind)

    def _unknown(self, kind: str, down: bool, html: bool, info: dict[str, Any]) -> Answer:
        prom = self.receiver.prom
        if down:
            prom.link(kind, "missed")
            info["link_outcome"] = "missed"
            fallback = self.config.fallback_url
            return redirect(fallback) if fallback else page(503, html)
        prom.link(kind, "not_found")
        return page(404, html)

    def _gone(self, kind: str, html: bool, info: dict[str, Any]) -> Answer:
        self.receiver.prom.link(kind, "gone")
        info["link_outcome"] = "gone"
        fallback = self.config.fallback_url
        return redirect(fallback) if fallback else page(410, html)

    async def _marker(self, token: str, kind: str, now: float, scope: Any, agent: str | None,
                      event_id: str) -> tuple[str, int]:
        """The collapse marker of this client's visit (the event's own id when collapsing is off)."""
        window = int(self.config.collapse_window)
        if window <= 0:
            return event_id, self.receiver.queue.ttl
        client = scope.get("client")
        address = client[0] if client else ""
        key = self.visitors.cached(now)
        visitor = digest(key, address, agent or "") if key is not None else (
            await self.visitors.visitor(now, address, agent or ""))
        return keys.link_collapse(token, kind, visitor), window

    def _remember(self, token: str, raw: bytes | None, now: float) -> Cached | None:
        fields = redirect_fields(raw)
        if fields is None:
            self._cache.pop(token, None)
            return None
        entry = (*fields, now)
        if self.config.cache_ttl > 0:
            if len(self._cache) >= MAX_CACHE:
                self._cache.popitem(last=False)
            self._cache[token] = entry
            self._cache.move_to_end(token)
        return entry

    async def _record(self, link: Link, kind: str, now: float, scope: Any, agent: str | None) -> str:
        """Put the visit's event (link known) in the ingest stream: `recorded`, `collapsed` or `missed`."""
        visit_id = f"{link.token}.{kind}.{secrets.token_hex(8)}"
        event = visit_json(link, _TYPES[kind], datetime.fromtimestamp(now, UTC), visit_id)
        try:
            marker = await self._marker(link.token, kind, now, scope, agent, event.id)
            accepted, _ = await self.receiver.queue.enqueue([event], [marker])
        except REDIS_FAILURES as exc:
            log.warning("link visit not recorded (redis: %s); visitor redirected", type(exc).__name__)
            return "missed"
        return "recorded" if accepted else "collapsed"

    async def _lookup(self, token: str, now: float) -> tuple[Link | None, bool]:
        """(the link or None, Redis failed): a fresh cached record, else Redis, else a stale cached one."""
        cached = self._cache.get(token)
        if cached is not None and now - cached[4] < self.config.cache_ttl:
            return _link(token, cached), False
        try:
            raw = await self._read(token)
        except REDIS_FAILURES as exc:
            log.warning("link lookup failed (redis: %s)", type(exc).__name__)
            return (_link(token, cached) if cached is not None else None), True
        entry = self._remember(token, raw, now)
        return (_link(token, entry) if entry is not None else None), False

    async def _read(self, token: str) -> Any:
        """The link's record, read in the ingest queue's next round trip (shared with other visits' events)."""
        return await self.receiver.queue.get(keys.link(token))


def _answer(target: str, goal_url: str | None, kind: str) -> Answer:
    if kind == "goal":
        return redirect(goal_url) if goal_url else pixel()
    return redirect(target)


def _host(url: str) -> str:
    rest = url.split("://", 1)[-1]
    return rest.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0].rsplit(":", 1)[0]
