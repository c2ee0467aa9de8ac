"""The one small interface every outside system sits behind.

An adapter gets a canonical event, its destination's settings and a `DeliveryContext`, makes the call(s)
with the shared `httpx.Client`, and returns an `Outcome`: ok (with the remote id it created), retry
(optionally after N seconds) or permanent (with the reason). It never raises for HTTP trouble and never
imports receiver or worker internals; the worker owns retries, dead letters and idempotency markers.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import quote

import httpx
from pydantic import AfterValidator, BaseModel, ConfigDict

from postrelay.core import backoff
from postrelay.core.events import CanonicalEvent

RETRYABLE_STATUS = frozenset({408, 425, 429}) | frozenset(range(500, 600))
EXCERPT = 500
MAX_RESPONSE_BYTES = 1 << 20


@dataclass
class Outcome:
    """What one delivery attempt achieved."""

    status: Literal["ok", "retry", "permanent"]
    remote_id: str | None = None
    retry_after: float | None = None
    http_status: int | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        """True when the side effect happened."""
        return self.status == "ok"

    @classmethod
    def success(cls, remote_id: str | None = None, http_status: int | None = None) -> Outcome:
        """A delivered outcome."""
        return cls("ok", remote_id=remote_id, http_status=http_status)

    @classmethod
    def retry(cls, detail: str, retry_after: float | None = None, http_status: int | None = None) -> Outcome:
        """A transient failure: try again later."""
        return cls("retry", retry_after=retry_after, http_status=http_status, detail=detail)

    @classmethod
    def permanent(cls, detail: str, http_status: int | None = None) -> Outcome:
        """A failure that retrying cannot fix: goes to the dead-letter store."""
        return cls("permanent", http_status=http_status, detail=detail)


@dataclass(frozen=True)
class RateInfo:
    """What one answer said about the destination's rate limit: `limit` requests per `window` seconds with
    `remaining` left (and `reset` seconds until the window refills, when the vendor says), or a 429's
    `retry_after`. Read by the worker's rate limiter (`workers.ratelimit`)."""

    limit: int | None = None
    remaining: int | None = None
    window: float | None = None
    reset: float | None = None
    retry_after: float | None = None


@dataclass
class BatchItem:
    """One delivery inside a batch call: its event and its own context (memo, attempt, extra)."""

    event: CanonicalEvent
    ctx: DeliveryContext


@dataclass
class DeliveryContext:
    """Per-delivery state the worker hands to an adapter.

    `recall`/`remember` persist the remote ids of steps already done for this (destination, event), so a
    re-run after a crash or a retry skips them instead of creating a second activity or task.
    `extra` carries the follow-up payload (rule name, `estimated`, `late`) for action adapters.
    """

    destination: str
    attempt: int = 1
    extra: dict[str, Any] = field(default_factory=dict)
    _memo: dict[str, str] = field(default_factory=dict)
    _save: Callable[[str, str], None] | None = None

    def recall(self, step: str) -> str | None:
        """The remote id stored for `step`, if that step already succeeded."""
        return self._memo.get(step)

    def remember(self, step: str, remote_id: str) -> None:
        """Persist that `step` succeeded with `remote_id` (before doing anything else)."""
        self._memo[step] = remote_id
        if self._save is not None:
            self._save(step, remote_id)


class AdapterSettings(BaseModel):
    """Base for each adapter's settings model (the keys of its `[destinations.NAME]` table).

    Validation errors never echo the value they reject (`hide_input_in_errors`): settings hold tokens and
    signing keys, and an error names the key and what is expected, never the secret.
    """

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)


class Adapter:
    """Base class: subclasses set `type`, `Settings`, and implement `deliver`."""

    type: ClassVar[str]
    Settings: ClassVar[builtins.type[AdapterSettings]] = AdapterSettings  # `type` above shadows the builtin
    batch_limit: ClassVar[int] = 0
    """Most deliveries one batch call takes (0: the vendor has no batch API; `deliver_batch` is not used)."""
    reads_rate_headers: ClassVar[bool] = False
    """True when `rate_info` reads the vendor's rate-limit headers (the worker then paces every call)."""

    def __init__(self, name: str, settings: AdapterSettings, client: httpx.Client) -> None:
        self.name = name
        self.settings = settings
        self.client = client
        # set by the worker: take a rate-limit slot before each call (None: go; else the seconds still to
        # wait, and the call is not made), and learn from each answer's rate-limit headers
        self.pace: Callable[[], float | None] | None = None
        self.observe: Callable[[RateInfo], None] | None = None

    def deliver_batch(self, items: list[BatchItem]) -> list[Outcome]:
        """One outcome per item, in order, for deliveries grouped into the vendor's batch API (adapters with a
        `batch_limit`); never raises for HTTP trouble. The default delivers them one by one."""
        return [self.deliver(item.event, item.ctx) for item in items]

    def rate_info(self, response: httpx.Response) -> RateInfo | None:
        """The rate-limit headers of an answer (vendors that send them override this)."""
        return None

    def deliver(self, event: CanonicalEvent, ctx: DeliveryContext) -> Outcome:
        """Make the outside call(s) for `event`; never raise for HTTP or network trouble."""
        raise NotImplementedError

    def secrets(self) -> Iterable[str]:
        """Secret values of this destination, redacted from every detail and log line."""
        return [v for k, v in self.settings.model_dump().items()
                if isinstance(v, str) and v and k in {"token", "secret", "api_key", "password",
                                                     "auth_token", "access_token", "client_secret"}]

    def call(self, method: str, url: str, **kwargs: Any) -> httpx.Response | Outcome:
        """Send a request; a network error or timeout becomes a retry Outcome instead of raising.

        httpx's timeouts apply to each network operation, so an answer dripping in a byte at a time would
        never time out: the whole answer must also arrive within the read timeout (overall, not per read),
        and at most `MAX_RESPONSE_BYTES` of its body are kept.
        """
        if self.pace is not None:
            wait = self.pace()
            if wait is not None:
                return Outcome.retry(f"rate limited: no request slot for {wait:.1f} s", retry_after=wait)
        timeout = kwargs.get("timeout")
        limit = (httpx.Timeout(timeout) if timeout is not None else self.client.timeout).read
        deadline = time.monotonic() + limit if limit else None
        try:
            with self.client.stream(method, url, **kwargs) as response:
                chunks: list[bytes] = []
                size = 0
                for chunk in response.iter_bytes():
                    if deadline is not None and time.monotonic() > deadline:
                        return Outcome.retry(f"timeout: the answer took longer than {limit:g} s")
                    chunks.append(chunk[:MAX_RESPONSE_BYTES - size])
                    size += len(chunks[-1])
                    if size >= MAX_RESPONSE_BYTES:
                        break
                headers = [(k, v) for k, v in response.headers.multi_items()
                           if k.lower() not in {"content-encoding", "content-length", "transfer-encoding"}]
                answer = httpx.Response(response.status_code, headers=headers, content=b"".join(chunks),
                                        request=response.request, extensions=response.extensions)
        except httpx.TimeoutException as exc:
            return Outcome.retry(f"timeout: {type(exc).__name__}")
        except httpx.TransportError as exc:
            return Outcome.retry(f"network error: {type(exc).__name__}: {exc}")
        if self.observe is not None:
            self._observe(answer)
        return answer

    def _observe(self, response: httpx.Response) -> None:
        """Hand the answer's rate-limit headers (and a 429's Retry-After) to the worker's limiter."""
        info = self.rate_info(response)
        if response.status_code == 429:
            retry_after = retry_after_seconds(response)
            if retry_after is not None:
                info = replace(info, retry_after=retry_after) if info else RateInfo(retry_after=retry_after)
        if info is not None and self.observe is not None:
            self.observe(info)


def retry_after_seconds(response: httpx.Response, now: float | None = None) -> float | None:
    """Parse `Retry-After` (seconds, fractions kept, or an HTTP date) into seconds from now."""
    return backoff.retry_after(response.headers.get("retry-after"), now)


def excerpt(response: httpx.Response) -> str:
    """A short, single-line excerpt of a response body for attempt records."""
    text = response.text[:EXCERPT] if response.content else ""
    return f"HTTP {response.status_code}: {' '.join(text.split())}"


def classify(response: httpx.Response, remote_id: str | None = None) -> Outcome:
    """Generic HTTP classification: 2xx ok; 408/425/429/5xx retry (honouring Retry-After); else permanent."""
    code = response.status_code
    if 200 <= code < 300:
        return Outcome.success(remote_id=remote_id, http_status=code)
    if code in RETRYABLE_STATUS:
        return Outcome.retry(excerpt(response), retry_after=retry_after_seconds(response), http_status=code)
    return Outcome.permanent(excerpt(response), http_status=code)


def path_segment(value: str, safe: str = "") -> str:
    """`value` percent-encoded as one URL path segment. `.` and `..` are encoded too: httpx resolves dot
    segments, so an event field equal to `..` would otherwise move the request to another endpoint."""
    quoted = quote(value, safe=safe)
    return quoted.replace(".", "%2E") if quoted in {".", ".."} else quoted


def check_url(value: str) -> str:
    """Settings validator: an http(s) base URL, without its trailing slash."""
    if not value.startswith(("https://", "http://")):
        raise ValueError("must be an http:// or https:// URL")
    return value.rstrip("/")


def check_token(value: str) -> str:
    """Settings validator: a credential sent in a header; surrounding whitespace (a stray newline) is dropped."""
    token = value.strip()
    if not token:
        raise ValueError("is empty (is its ${ENV_VAR} set?)")
    if not token.isascii() or any(char.isspace() or not char.isprintable() for char in token):
        raise ValueError("must be printable ASCII without spaces")
    return token


Token = Annotated[str, AfterValidator(check_token)]
"""A credential setting (validated by `check_token`)."""
BaseURL = Annotated[str, AfterValidator(check_url)]
"""A base-URL setting (validated by `check_url`)."""


def json_object(response: httpx.Response) -> dict[str, Any]:
    """The response body as a JSON object; {} when it is not one."""
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
