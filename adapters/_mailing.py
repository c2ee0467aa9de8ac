"""What the print-and-mail adapters (PostGrid, Lob) share for creating a mailing's piece.

A mailer adapter turns a `MailingRequest` into the provider's create-order body (`mailing_body`, also what a
dry run stores), creates the piece with the provider's `Idempotency-Key` (`create_mailing`) and, after a
crash, finds a piece it may already have created by its `postrelay_mailing` metadata (`find_mailing`).
All three return `Outcome`s and never raise, like `Adapter.deliver`.
"""

from __future__ import annotations

import json
import time
from typing import Any, Protocol

import httpx

from postrelay.adapters._payload import scrub
from postrelay.adapters.base import Adapter, Outcome, classify, excerpt, json_object
from postrelay.core.mailing import RESERVED_KEY, MailingRequest
from postrelay.core.redaction import MASK, redact

IDEMPOTENCY_HEADER = "Idempotency-Key"


class Mailer(Protocol):
    """The mailing side of the PostGrid and Lob adapters."""

    name: str
    max_merge_variables_chars: int | None
    """The most characters the merge variables may take as compact JSON (None: no documented limit)."""
    merge_name_rule: str
    """What the provider allows in a merge variable's name, for error messages ("" when it has no rule)."""

    def mailing_defaults(self) -> dict[str, Any]:
        """The destination's settings that fill a request's unset fields (templates, sender, size, …)."""

    def mailing_body(self, request: MailingRequest, mid: str) -> dict[str, Any]:
        """The provider's create body for this mailing."""

    def unusable_merge_variables(self, variables: dict[str, Any]) -> list[str]:
        """Names among `variables` the provider refuses as merge variable names ([] when all are fine)."""

    def sizes(self, kind: str) -> frozenset[str]:
        """The sizes the provider prints for `kind` (postcards in either order: `6x4` = `4x6`)."""

    def mailing_target(self, kind: str) -> tuple[str, dict[str, Any]]:
        """(collection URL for `kind`, the `call` keywords that authenticate: `headers` and/or `auth`)."""

    def shown_request(self, request: MailingRequest, mid: str) -> dict[str, Any]:
        """The create request as sent, for people to read: method, URL, headers, body; secrets as `***`."""

    def create_mailing(self, request: MailingRequest, mid: str) -> Outcome:
        """Create the piece once (provider Idempotency-Key = `mid`); ok carries the provider's piece id."""

    def find_mailing(self, request: MailingRequest, mid: str) -> str | Outcome | None:
        """The id of a piece already created for `mid`, None when there is none, an Outcome when the lookup failed."""


def is_html(value: str) -> bool:
    """True when a template value is inline HTML rather than a template id."""
    return "<" in value


def size_pair(size: str) -> tuple[int, int] | None:
    """`"6x4"` / `"4x6"` -> (4, 6): providers write the same card size in opposite orders."""
    parts = size.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        return None
    small, large = sorted(int(p) for p in parts)
    return small, large


def size_problem(mailer: Mailer, kind: str, size: str | None) -> str | None:
    """Why `size` is not one the provider prints for `kind` (None when it is, or when unset: the default)."""
    if size is None:
        return None
    known = mailer.sizes(kind)
    pair = size_pair(size)
    if size in known or (kind == "postcard" and pair and any(size_pair(k) == pair for k in known)):
        return None
    return f"size {size!r}: {mailer.name} prints {kind}s in {', '.join(sorted(known))}"


def refused(response: httpx.Response) -> Outcome:
    """A non-2xx create/lookup answer: 408/425/429/5xx retry (after Retry-After, else a 429 waits for Lob's
    `ratelimit-reset`), any other 4xx is permanent with the provider's reason (`error.type`/`error.code` and
    `error.message` of PostGrid's and Lob's error bodies)."""
    outcome = classify(response)
    if response.status_code == 429 and outcome.retry_after is None:
        outcome.retry_after = ratelimit_reset(response)
    error = json_object(response).get("error")
    if outcome.status == "permanent" and isinstance(error, dict) and error.get("message"):
        code = error.get("type") or error.get("code")
        outcome.detail = f"HTTP {response.status_code}: " + (f"{code}: " if code else "") + str(error["message"])[:400]
    return outcome


def ratelimit_reset(response: httpx.Response, now: float | None = None) -> float | None:
    """Seconds until Lob's `ratelimit-reset` ("The time at which the rate limit window resets in UTC epoch
    seconds", on every create answer), or None when absent or not a plausible time."""
    value = response.headers.get("ratelimit-reset", "").strip()
    if not value.isdigit() or int(value) < 1_000_000_000:
        return None
    return max(0.0, int(value) - (time.time() if now is None else now))


def lookup_failed(outcome: Outcome) -> Outcome | None:
    """What a failed lookup for an earlier piece means: transient trouble retries the attempt (creating now
    could make a second piece), 401/403 are permanent, any other answer is ignored (None: create, with the
    provider's Idempotency-Key as the remaining guard)."""
    if outcome.status == "retry":
        return Outcome.retry(f"lookup of an earlier piece failed: {outcome.detail}", retry_after=outcome.retry_after,
                             http_status=outcome.http_status)
    if outcome.http_status in (401, 403):
        return Outcome.permanent(f"lookup of an earlier piece failed: {outcome.detail}", http_status=outcome.http_status)
    return None


def create_piece(adapter: Adapter, url: str, auth: dict[str, Any], body: dict[str, Any], mid: str) -> Outcome:
    """POST a piece with `Idempotency-Key: <mailing id>`: 2xx -> ok with the provider's `id`; a refusal as
    `refused`; never a secret in the detail."""
    secrets = list(adapter.secrets())
    headers = {**auth.get("headers", {}), IDEMPOTENCY_HEADER: mid}
    response = adapter.call("POST", url, json=body, **{**auth, "headers": headers})
    if isinstance(response, Outcome):
        return scrub(response, secrets)
    if not response.is_success:
        return scrub(refused(response), secrets)
    piece_id = str(json_object(response).get("id") or "")
    if not piece_id:
        return scrub(Outcome.permanent(f"created but no id in the answer: {excerpt(response)}",
                                       http_status=response.status_code), secrets)
    return Outcome.success(remote_id=piece_id, http_status=response.status_code)


def find_piece(adapter: Adapter, url: str, auth: dict[str, Any], params: dict[str, Any],
               mid: str) -> str | Outcome | None:
    """The id of a listed piece whose `metadata.postrelay_mailing` is `mid`; None when none is listed; an
    Outcome when the lookup failed in a way that must stop the attempt (`lookup_failed`)."""
    response = adapter.call("GET", url, params=params, **auth)
    if isinstance(response, Outcome) or not response.is_success:
        failed = lookup_failed(response if isinstance(response, Outcome) else refused(response))
        return scrub(failed, list(adapter.secrets())) if failed else None
    for piece in json_object(response).get("data") or []:
        metadata = piece.get("metadata") if isinstance(piece, dict) else None
        if isinstance(metadata, dict) and metadata.get(RESERVED_KEY) == mid and piece.get("id"):
            return str(piece["id"])
    return None


def shown_request(adapter: Adapter, url: str, auth: dict[str, Any], body: dict[str, Any],
                  mid: str) -> dict[str, Any]:
    """What `create_piece` sends, for the console: credentials shown as `***`, and every secret of the
    destination redacted from the whole request (a key pasted into a merge variable included)."""
    headers = {k: ("***" if k.lower() in ("x-api-key", "authorization") else v)
               for k, v in auth.get("headers", {}).items()}
    if "auth" in auth:
        headers["Authorization"] = "Basic ***"
    headers[IDEMPOTENCY_HEADER] = mid
    shown = {"method": "POST", "url": url, "headers": headers, "body": body}
    return dict(json.loads(redact(json.dumps(shown), adapter.secrets(), mask=MASK)))
