"""Binding links to pieces where events are applied (the worker's dispatcher, before the timeline).

For one batch of events, in stream order, one pipeline of scripts (`postrelay/core/lua/link_visit.lua`,
`link_bind.lua`):
- a piece event whose metadata carries `postrelay_link` (= a token) or `ref` (= a link's `ref`) binds every
  such link that is not bound yet (a `ref` match also needs the same campaign when both name one), copying the
  piece's kind, country, recipient and metadata into the link; the visits the link held are returned, and
  are added to the batch right after that event as copies attached to the piece, in their order;
- a visit (`source = links`) gets its link's campaign and ref; a visit of a bound link is moved to its piece
  (timeline, follow-ups, routes and CRMs then see the piece's visit); a visit of a link not bound yet stays on
  the link's own timeline (`links`/<token>), flows to routes, and is held for a later binding.

Everything is idempotent, so a batch processed again after a crash gives the same result: held visits are
kept (a zset of event JSON), and the event that bound a link (`bound_by`) gets them again. The attached
copies carry `metadata.postrelay.attached` (the original event id): they go to the piece's timeline and
follow-ups, but not to routes or the event counters a second time (`is_attached`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from postrelay.core import keys
from postrelay.core.events import CanonicalEvent, Mailpiece, Recipient, event_id
from postrelay.core.scripts import lua
from postrelay.core.stores.links import LINK_SOURCE, TOKEN_RE, from_json, piece_fields, read


def _split(key: str) -> tuple[str, str]:
    head, _, tail = key.partition("\0")
    return head, tail


_LINK_KEY = _split(keys.link("\0"))
_HELD_SUFFIX = keys.link_held("\0").partition("\0")[2].removeprefix(_LINK_KEY[1])
_REF_KEY = _split(keys.link_ref("\0"))


def is_attached(event: CanonicalEvent) -> bool:
    """True for a held visit's copy attached to its piece at binding (routes and counters skip it)."""
    detail = event.metadata.get("postrelay")
    return event.source == LINK_SOURCE and isinstance(detail, dict) and "attached" in detail


def _bound(event: CanonicalEvent) -> bool:
    detail = event.metadata.get("postrelay")
    return isinstance(detail, dict) and bool(detail.get("piece_source"))


def _binding_keys(event: CanonicalEvent) -> tuple[str, str]:
    """(token, ref) named by a piece event's metadata ('' when absent or unusable)."""
    token = event.metadata.get("postrelay_link")
    ref = event.metadata.get("ref")
    token = token if isinstance(token, str) and TOKEN_RE.match(token) else ""
    ref = ref if isinstance(ref, str) and 0 < len(ref) <= 200 else ""
    return token, ref


def bind_args(token: str, ref: str, source: str, piece_id: str, kind: str, country: str, campaign: str,
              recipient: str, metadata: str, now: float, bound_by: str) -> list[Any]:
    """ARGV of `link_bind.lua` (see its header)."""
    return [token, ref, source, piece_id, kind, country, campaign, recipient, metadata, repr(now), bound_by,
            *_LINK_KEY, _HELD_SUFFIX, *_REF_KEY]


def bind(redis: Any, token: str, source: str, piece_id: str, now: float) -> bool:
    """Bind a link to a piece created for it (e.g. by a mailing); False if unknown or bound to another piece.

    The piece's own events (with `postrelay_link` in its metadata) later add its recipient and metadata."""
    if not TOKEN_RE.match(token):
        return False
    lua("link_bind")(redis, keys=[keys.link_ref("")], args=bind_args(token, "", source, piece_id, "", "", "", "{}",
                                                                   "{}", now, "mint"))
    link = read(redis, token)
    return link is not None and (link.piece_source, link.piece_id) == (source, piece_id)


def rewrite(event: CanonicalEvent, raw_link: bytes | str | None, token: str) -> CanonicalEvent:
    """A visit event with its link's campaign and ref, moved onto the piece the link is bound to (same id, type
    and times). The receiver may have queued it knowing only the token (`receiver.links`)."""
    link = from_json(token, raw_link)
    if link is None:
        return event
    detail = event.metadata.get("postrelay")
    fields = piece_fields(link, token, {k: v for k, v in (detail if isinstance(detail, dict) else {}).items()})
    return event.model_copy(update={"mailpiece": Mailpiece.model_validate(fields["mailpiece"]),
                                    "recipient": Recipient.model_validate(fields["recipient"]),
                                    "metadata": fields["metadata"]})


def _attached_copy(held: CanonicalEvent, raw_link: bytes | str | None, token: str) -> CanonicalEvent:
    moved = rewrite(held, raw_link, token)
    src, pid = moved.piece_key
    sid = f"{held.source_event_id}@{src}:{pid}"
    meta = dict(moved.metadata)
    meta["postrelay"] = {**meta.get("postrelay", {}), "attached": held.id}
    return moved.model_copy(update={"id": event_id(LINK_SOURCE, sid, held.type.value), "source_event_id": sid,
                                    "metadata": meta})


class LinkBinder:
    """Resolves links in a batch of events (sync; the queue Redis, where links live)."""

    def __init__(self, redis: Any) -> None:
        self.redis = redis
        self._visit = lua("link_visit")
        self._bind = lua("link_bind")

    def resolve(self, events: Sequence[CanonicalEvent]) -> list[CanonicalEvent]:
        """The batch with visits moved onto their pieces and held visits attached after the binding event."""
        calls: list[tuple[int, str, str]] = []  # (index, "visit" | "bind", token)
        pipe = self.redis.pipeline(transaction=False)
        for i, event in enumerate(events):
            if event.source == LINK_SOURCE:
                token = event.metadata.get("postrelay_link")
                if _bound(event) or not isinstance(token, str) or not TOKEN_RE.match(token):
                    continue
                self._visit(pipe, keys=[keys.link(token), keys.link_held(token)],
                            args=[event.occurred_at.timestamp(), event.model_dump_json()])
                calls.append((i, "visit", token))
                continue
            token, ref = _binding_keys(event)
            if not token and not ref:
                continue
            meta = {k: v for k, v in event.metadata.items() if k != "postrelay"}
            campaign = event.mailpiece.campaign_id or event.metadata.get("campaign_id") or ""
            self._bind(pipe, keys=[keys.link_ref(ref)],
                       args=bind_args(token, ref, event.source, event.mailpiece.id, event.mailpiece.kind or "",
                                      event.mailpiece.country or event.recipient.country or "",
                                      campaign if isinstance(campaign, str) else "",
                                      event.recipient.model_dump_json(exclude_none=True),
                                      json.dumps(meta, default=str, separators=(",", ":")),
                                      event.received_at.timestamp(), event.id))
            calls.append((i, "bind", token))
        if not calls:
            return list(events)
        results = dict(zip((i for i, _, _ in calls), zip(calls, pipe.execute(), strict=True), strict=True))
        out: list[CanonicalEvent] = []
        for i, event in enumerate(events):
            if i not in results:
                out.append(event)
                continue
            (_, kind, token), answer = results[i]
            if kind == "visit":
                out.append(rewrite(event, answer, token) if answer else event)
                continue
            out.append(event)
            out.extend(self._attach(answer))
        return out

    def _attach(self, answer: list[Any]) -> list[CanonicalEvent]:
        """Attached copies of the held visits of each link a piece event bound."""
        copies: list[CanonicalEvent] = []
        pos = 0
        while pos < len(answer):
            token = _text(answer[pos])
            n = int(answer[pos + 1])
            held = answer[pos + 2:pos + 2 + n]
            pos += 2 + n
            if not held:
                continue
            raw_link = self.redis.get(keys.link(token))
            for raw in held:
                copies.append(_attached_copy(CanonicalEvent.model_validate_json(raw), raw_link, token))
        return copies


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)

