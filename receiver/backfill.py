"""`postrelay backfill postgrid|lob --since T`: page through a provider's events list API and ingest what is there.

Every event object goes through the provider's own `normalize()` and the receiver's `IngestQueue.enqueue`
(the same Lua script as a webhook), so dedupe is shared: an event already received by webhook, or by an
earlier backfill, counts as a duplicate and is not queued again. Re-running a backfill is always safe.

- PostGrid: `GET {api_base}/print-mail/v1/events?limit=N&skip=K` with `X-API-Key`; answers
  `{"object": "list", "limit", "skip", "totalCount", "data": [...]}`. Offset paging stops at `totalCount`, an
  empty page, or a short page when no `totalCount` is given.
- Lob: `GET {api_base}/v1/events?limit=N` with HTTP Basic auth (API key as the user name, empty password);
  answers `{"object": "list", "data": [...], "count", "next_url", "previous_url"}`. Cursor paging follows
  `next_url`; only its query string is used (the request always goes to `api_base`, so the key is never sent
  to another host). Assumption: Lob's events list behaves like its other list endpoints.
- `--since`/`--until` filter on the event's `createdAt` (PostGrid) or `date_created` (Lob), client side. While
  the list comes newest first (checked on every item), paging stops after the first page whose oldest event
  is before `--since`; if the order is ever not newest-first, every page is read. Events without a readable
  date are kept (dedupe makes that harmless).
- 429 and 5xx (and connection errors) are retried with exponential backoff, honouring `Retry-After`
  (seconds or an HTTP date, capped at 5 minutes), at most `MAX_ATTEMPTS` times per page; other 4xx stop the run.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO
from urllib.parse import urlsplit

import httpx

from postrelay.core import backoff
from postrelay.core.config import LobSource, PostGridSource
from postrelay.core.version import USER_AGENT
from postrelay.receiver.errors import HTTPError
from postrelay.receiver.ingest import IngestQueue
from postrelay.receiver.providers import lob, postgrid
from postrelay.receiver.providers.base import parse_time

MAX_ATTEMPTS = 6
MAX_RETRY_AFTER = 300.0
SOURCES = ("postgrid", "lob")
SPINNER = "|/-\\"
Sleep = Callable[[float], Awaitable[None]]


class BackfillError(Exception):
    """The provider API refused the backfill (bad key, bad request) or kept failing."""


@dataclass
class Counts:
    """What a backfill saw and did."""

    pages: int = 0
    seen: int = 0
    accepted: int = 0
    duplicates: int = 0
    ignored: int = 0
    out_of_range: int = 0
    invalid: int = 0
    retries: int = 0
    total: int | None = None
    stopped_early: bool = False

    def as_dict(self) -> dict[str, Any]:
        """JSON-able counts."""
        return asdict(self)


@dataclass
class Page:
    """One page of provider events."""

    items: list[Any]
    total: int | None = None


@dataclass
class Fetcher:
    """GET with bounded retries on 429, 5xx and connection errors, honouring Retry-After."""

    client: httpx.AsyncClient
    counts: Counts
    sleep: Sleep = asyncio.sleep
    max_attempts: int = MAX_ATTEMPTS
    base_delay: float = 1.0
    max_delay: float = 60.0
    rng: random.Random = field(default_factory=random.Random)

    async def get_json(self, url: str, params: httpx.QueryParams) -> dict[str, Any]:
        """The JSON object at `url`; BackfillError when it cannot be had."""
        for attempt in range(1, self.max_attempts + 1):
            try:
                resp = await self.client.get(url, params=params)
            except httpx.TransportError as exc:
                problem, wait = f"{type(exc).__name__}", None
            else:
                if resp.status_code == 200:
                    try:
                        body = resp.json()
                    except ValueError:
                        raise BackfillError(f"GET {url}: the answer is not JSON") from None
                    if not isinstance(body, dict):
                        raise BackfillError(f"GET {url}: the answer is not a JSON object")
                    return body
                if resp.status_code != 429 and resp.status_code < 500:
                    hint = " (check the source's api_key)" if resp.status_code in (401, 403) else ""
                    raise BackfillError(f"GET {url}: HTTP {resp.status_code}{hint}: {resp.text[:200]}")
                problem, wait = f"HTTP {resp.status_code}", retry_after(resp.headers.get("retry-after"))
            if attempt == self.max_attempts:
                raise BackfillError(f"GET {url}: {problem}, gave up after {attempt} attempts")
            if wait is None:
                wait = backoff.jittered(attempt, self.base_delay, self.max_delay, self.rng)
            self.counts.retries += 1
            await self.sleep(wait)
        raise AssertionError("unreachable")


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta seconds or an HTTP date), capped; None if absent/bad."""
    return backoff.retry_after(value, now, cap=MAX_RETRY_AFTER)


class PostGridPager:
    """Offset pages of PostGrid's events list."""

    path = "/print-mail/v1/events"
    date_field = "createdAt"

    def __init__(self, settings: PostGridSource, page_size: int) -> None:
        self.url = settings.api_base.rstrip("/") + self.path
        self.headers = {"X-API-Key": settings.api_key or ""}
        self.auth: httpx.Auth | None = None
        self.page_size = page_size

    async def pages(self, fetch: Fetcher) -> AsyncIterator[Page]:
        """Pages until totalCount, an empty page or a short page."""
        skip = 0
        while True:
            body = await fetch.get_json(self.url, httpx.QueryParams({"limit": self.page_size, "skip": skip}))
            data = body.get("data")
            items = data if isinstance(data, list) else []
            total = body.get("totalCount")
            total = total if isinstance(total, int) and not isinstance(total, bool) else None
            yield Page(items, total)
            skip += len(items)
            limit = body.get("limit")
            limit = limit if isinstance(limit, int) else self.page_size
            if not items or (total is not None and skip >= total) or (total is None and len(items) < limit):
                return


class LobPager:
    """Cursor pages of Lob's events list."""

    path = "/v1/events"
    date_field = "date_created"

    def __init__(self, settings: LobSource, page_size: int) -> None:
        self.url = settings.api_base.rstrip("/") + self.path
        self.headers: dict[str, str] = {}
        self.auth = httpx.BasicAuth(settings.api_key or "", "")
        self.page_size = page_size

    async def pages(self, fetch: Fetcher) -> AsyncIterator[Page]:
        """Pages while `next_url` names a further page."""
        params = httpx.QueryParams({"limit": self.page_size})
        seen_cursors: set[str] = set()
        while True:
            body = await fetch.get_json(self.url, params)
            data = body.get("data")
            items = data if isinstance(data, list) else []
            total = body.get("total_count")
            yield Page(items, total if isinstance(total, int) and not isinstance(total, bool) else None)
            next_url = body.get("next_url")
            if not items or not isinstance(next_url, str) or not next_url:
                return
            query = urlsplit(next_url).query
            if not query or query in seen_cursors:  # no cursor, or the same page again: stop, never loop
                return
            seen_cursors.add(query)
            params = httpx.QueryParams(query)  # keeps blank values, as parse_qsl(keep_blank_values=True)


class Progress:
    """A progress line on stderr: redrawn in place on a terminal, one line every few seconds otherwise."""

    def __init__(self, label: str, stream: TextIO | None = None, interval: float = 5.0, width: int = 24,
                 enabled: bool = True) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = interval
        self.width = width
        self.enabled = enabled
        self._last = 0.0
        self._spin = 0

    def line(self, counts: Counts) -> str:
        """`label [#####-----] 120/400 pages=2 seen=120 accepted=… duplicates=… ignored=… skipped=…`."""
        if counts.total:
            done = min(counts.seen, counts.total)
            filled = int(self.width * done / counts.total)
            bar = "#" * filled + "-" * (self.width - filled)
            head = f"[{bar}] {done}/{counts.total}"
        else:
            self._spin = (self._spin + 1) % 4
            head = f"[{SPINNER[self._spin]}]"
        return (f"{self.label} {head} pages={counts.pages} seen={counts.seen} accepted={counts.accepted} "
                f"duplicates={counts.duplicates} ignored={counts.ignored} "
                f"skipped={counts.out_of_range + counts.invalid} retries={counts.retries}")

    def update(self, counts: Counts, final: bool = False) -> None:
        """Show the current counts (throttled when not on a terminal)."""
        if not self.enabled:
            return
        now = time.monotonic()
        if self.tty:
            self.stream.write("\r" + self.line(counts) + "\033[K" + ("\n" if final else ""))
        elif final or now - self._last >= self.interval:
            self.stream.write(self.line(counts) + "\n")
            self._last = now
        self.stream.flush()


def _event_time(item: dict[str, Any], date_field: str) -> datetime | None:
    raw = item.get(date_field)
    if raw is None:
        return None
    try:
        return parse_time(raw, date_field)
    except HTTPError:
        return None


async def backfill(source: str, settings: PostGridSource | LobSource, queue: IngestQueue, since: datetime,
                   until: datetime | None = None, *, page_size: int = 100, max_pages: int | None = None,
                   client: httpx.AsyncClient | None = None, sleep: Sleep = asyncio.sleep,
                   progress: Progress | None = None, clock: Callable[[], float] = time.time) -> Counts:
    """Ingest every `source` event created in [since, until) that the events list API returns."""
    if source not in SOURCES:
        raise ValueError(f"backfill supports {', '.join(SOURCES)}, not {source!r}")
    if not settings.api_key:
        raise BackfillError(f"sources.{source}.api_key is not set (needed to read the events list API)")
    pager: PostGridPager | LobPager = (PostGridPager(settings, page_size) if source == "postgrid"  # type: ignore[arg-type]
                                       else LobPager(settings, page_size))  # type: ignore[arg-type]
    provider = postgrid if source == "postgrid" else lob
    counts = Counts()
    own_client = client is None
    http = client or httpx.AsyncClient(timeout=30.0, follow_redirects=False, headers={"User-Agent": USER_AGENT})
    http.headers.update(pager.headers)
    if pager.auth is not None:
        http.auth = pager.auth
    fetch = Fetcher(http, counts, sleep=sleep)
    newest_first, previous = True, None
    try:
        async for page in pager.pages(fetch):
            counts.pages += 1
            counts.total = page.total if page.total is not None else counts.total
            received_at = datetime.fromtimestamp(clock(), UTC)
            batch = []
            oldest = None
            for item in page.items:
                counts.seen += 1
                if not isinstance(item, dict):
                    counts.invalid += 1
                    continue
                when = _event_time(item, pager.date_field)
                if when is not None:
                    if previous is not None and when > previous:
                        newest_first = False
                    previous = oldest = when
                    if when < since or (until is not None and when >= until):
                        counts.out_of_range += 1
                        continue
                try:
                    normalized = provider.normalize(item, received_at)
                except HTTPError:
                    counts.invalid += 1
                    continue
                counts.ignored += normalized.ignored
                batch.extend(normalized.events)
            if batch:
                accepted, duplicates = await queue.enqueue(batch)
                counts.accepted += accepted
                counts.duplicates += duplicates
            if progress:
                progress.update(counts)
            if newest_first and oldest is not None and oldest < since:
                counts.stopped_early = True
                break
            if max_pages is not None and counts.pages >= max_pages:
                counts.stopped_early = True
                break
    finally:
        if own_client:
            await http.aclose()
        if progress:
            progress.update(counts, final=True)
    return counts
