"""The compact mailpiece layout's encoding: canonical events <-> small hash fields (`postrelay.core.timeline`).

One Redis hash per mailpiece (`keys.piece`) whose every field and value stays ≤ 63 bytes, so Redis keeps it in
the compact listpack encoding (default `hash-max-listpack-value 64`). Its fields:

- `s`: the stage code and the compact time the stage was reached (absent while the piece has no stage);
- `t`: the codes of the event types the piece had (follow-up `unless` checks);
- `u`: blob refs of the piece parts, most recently used first (piece attributes for filters);
- `_<n>`: blob n, an immutable JSON document stored once per piece: a piece part `[mailpiece, recipient,
  metadata]` (positional lists without the id, trailing nulls dropped, metadata without `postrelay`), a
  `metadata.postrelay` dict, or a whole event (fallback) — events that share one reference it;
- `<12 hex>`: one event's record (the key is the start of its canonical id; dedupe): stage code, type code,
  estimated flag, occurred/received times, piece-part ref, postrelay ref, ZIP, source event id; or `!<ref>`
  (after the stage code) for an event stored whole.

A value longer than 63 bytes is split into `<field>`, `<field>.1`, `<field>.2`, …. The canonical id is derived
(`events.event_id`). The writer checks that `decode(encode(event))` renders exactly the event's JSON and stores
the event whole when it would not, so the read API's JSON is byte-for-byte what it was.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from functools import lru_cache
from typing import Any

from postrelay.core.events import PIECE_ATTRS, CanonicalEvent, EventType, Mailpiece, Recipient, event_id

CHUNK = 63
# Fixed forever (stored data): the code of a type is its letter here.
TYPES: tuple[str, ...] = (
    "created", "addressed", "printed", "mailed", "in_transit", "in_local_area", "processed_for_delivery",
    "delivered", "re_routed", "returned_to_sender", "cancelled", "failed", "purl_opened", "purl_completed",
    "informed_delivery_sent", "informed_delivery_opened", "informed_delivery_clicked")
CODE: dict[str, str] = {t: chr(ord("a") + i) for i, t in enumerate(TYPES)}
TYPE_OF: dict[str, str] = {c: t for t, c in CODE.items()}
NO_STAGE = "-"
assert set(TYPES) == {t.value for t in EventType}

_MP = [f for f in Mailpiece.model_fields if f != "id"]
_RC = list(Recipient.model_fields)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_EVENT_FIELD = re.compile(rb"^[0-9a-f]{12}$")
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


def dumps(obj: Any) -> str:
    """JSON as the API renders it (Starlette's JSONResponse settings)."""
    return json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _b36(n: int) -> str:
    sign = "-" if n < 0 else ""
    n = abs(n)
    out = ""
    while True:
        n, d = divmod(n, 36)
        out = _DIGITS[d] + out
        if not n:
            return sign + out


def time_code(dt: datetime) -> str:
    """A compact, exact time: epoch microseconds in base 36, then `~<offset minutes>` unless UTC."""
    off = dt.utcoffset()
    if off is None:
        raise ValueError("naive datetime")
    code = _b36((dt - _EPOCH) // _US)
    return code if not off else f"{code}~{_b36(int(off.total_seconds() // 60))}"


def time_of(code: str) -> datetime:
    """The datetime of a `time_code`."""
    micros, _, off = code.partition("~")
    tz = timezone(timedelta(minutes=int(off, 36))) if off else UTC
    return (_EPOCH + int(micros, 36) * _US).astimezone(tz)


def json_time(code: str) -> str:
    """A time as the event JSON renders it (pydantic: `Z` for UTC)."""
    text = time_of(code).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def stage_code(stage: str | None) -> str:
    return CODE[stage] if stage else NO_STAGE


def stage_of(code: str) -> str | None:
    return TYPE_OF.get(code)


def chunks(field: str, value: bytes) -> list[tuple[str, bytes]]:
    """(field, value) pairs storing `value` in ≤ 63-byte pieces."""
    parts = [value[i:i + CHUNK] for i in range(0, len(value), CHUNK)] or [b""]
    return [(field if i == 0 else f"{field}.{i}", p) for i, p in enumerate(parts)]


def _trim(values: list[Any]) -> list[Any]:
    while values and values[-1] is None:
        values.pop()
    return values


@dataclass(frozen=True)
class Encoded:
    """One event as the apply script stores it: record head/tail around the blob refs, and the blobs."""

    eid: str          # 12 hex: the record's field name
    head: str         # type code, estimated flag, occurred, received, then `,` (after the stage code)
    tail: str         # `,<zip>,<source event id>` (after the refs)
    part: bytes       # the piece part (or the whole event when `whole`)
    postrelay: bytes  # metadata.postrelay JSON, b"" when the event has none
    whole: bool


def event_key(eid: str) -> str:
    """Record field of a canonical id (`mev_<hex>`)."""
    return eid.removeprefix("mev_")[:12]


def _part(event: dict[str, Any]) -> tuple[bytes, bytes]:
    meta = dict(event["metadata"])
    pr = meta.pop("postrelay", None)
    mp, rc = event["mailpiece"], event["recipient"]
    doc = _trim([_trim([mp.get(f) for f in _MP]), _trim([rc.get(f) for f in _RC]), meta or None])
    return dumps(doc).encode(), (dumps(pr).encode() if "postrelay" in event["metadata"] else b"")


def decode(source: str, piece_id: str, stage: str | None, head_tail: str, part: bytes,
           postrelay: bytes) -> dict[str, Any]:
    """The event dict of a compact record (without its stage code and refs: `head_tail` = head + tail)."""
    etype, est = TYPE_OF[head_tail[0]], head_tail[1] == "1"
    occ, rcv, zip_code, seid = head_tail[2:].split(",", 3)
    mp_v, rc_v, meta = [*json.loads(part), [], [], None][:3]
    mp_v, rc_v = mp_v + [None] * (len(_MP) - len(mp_v)), rc_v + [None] * (len(_RC) - len(rc_v))
    metadata = dict(meta or {})
    if postrelay:
        metadata["postrelay"] = json.loads(postrelay)
    return {"id": event_id(source, seid, etype), "type": etype, "occurred_at": json_time(occ),
            "received_at": json_time(rcv), "source": source, "source_event_id": seid,
            "mailpiece": {"id": piece_id, **dict(zip(_MP, mp_v, strict=True))}, "stage": stage,
            "location": {"zip": zip_code or None}, "recipient": dict(zip(_RC, rc_v, strict=True)),
            "metadata": metadata, "estimated": est}


def encode_dict(event: dict[str, Any], model: CanonicalEvent | None = None) -> Encoded:
    """Encode an event dict (its `stage` is ignored); stored whole unless the compact form decodes to it exactly."""
    eid = event_key(event["id"])
    whole_doc = dict(event, stage=None)
    try:
        occ = time_code(model.occurred_at if model else datetime.fromisoformat(event["occurred_at"]))
        rcv = time_code(model.received_at if model else datetime.fromisoformat(event["received_at"]))
        etype = event["type"]
        head = f"{CODE[etype]}{'1' if event['estimated'] is True else '0'}{occ},{rcv},"
        zip_code = event["location"]["zip"] or ""
        tail = f",{zip_code},{event['source_event_id']}"
        part, pr = _part(event)
        again = decode(event["source"], event["mailpiece"]["id"], None, head + tail[1:], part, pr)
        if rebuilt_exactly(again, whole_doc) and event_key(again["id"]) == eid:
            return Encoded(eid, head, tail, part, pr, False)
    except (KeyError, ValueError, TypeError, AttributeError, IndexError):
        pass
    return Encoded(eid, "", "", dumps(whole_doc).encode(), b"", True)


def encode(event: CanonicalEvent) -> Encoded:
    """Encode a canonical event (see `encode_dict`; its JSON-mode dump is `json.loads` of its JSON)."""
    return encode_dict(event.model_dump(mode="json"), event)


def rebuilt_exactly(again: dict[str, Any], doc: dict[str, Any]) -> bool:
    """True only if `dumps(again) == dumps(doc)`, for `again` = `decode` of `doc`'s compact form (cheaper than
    rendering both). Equal dicts render the same JSON unless a key order or a type differs where `==` does not
    see it (True == 1 == 1.0). `decode` takes the piece part and `metadata.postrelay` back from their JSON, which
    keeps every type and nested order, so only what it builds itself is checked: the key order of the event, its
    mailpiece, recipient, location and metadata (`postrelay` goes last), and `estimated`, its only non-string."""
    return (again == doc and list(again) == list(doc) and type(again["estimated"]) is type(doc["estimated"])
            and all(list(again[k]) == list(doc[k]) for k in ("mailpiece", "recipient", "location", "metadata")))


def fields(raw: dict[bytes, bytes]) -> dict[str, bytes]:
    """A piece hash's logical fields, chunks joined."""
    out: dict[str, bytes] = {}
    for name in sorted(k for k in raw if b"." not in k):
        value, i = raw[name], 1
        while (nxt := raw.get(name + b"." + str(i).encode())) is not None:
            value, i = value + nxt, i + 1
        out[name.decode()] = value
    return out


@lru_cache(maxsize=4096)
def part_attrs(blob: bytes) -> tuple[tuple[str, str], ...]:
    """A piece part's (or whole event's) attributes as (PIECE_ATTRS path, value), empty values left out."""
    doc = json.loads(blob)
    if isinstance(doc, dict):  # an event stored whole
        mp, rc = doc.get("mailpiece") or {}, doc.get("recipient") or {}
    else:
        mp_v, rc_v = [*doc, [], []][:2]
        mp, rc = dict(zip(_MP, mp_v, strict=False)), dict(zip(_RC, rc_v, strict=False))
    values = {**{f"mailpiece.{k}": mp.get(k) for k in _MP}, **{f"recipient.{k}": rc.get(k) for k in _RC}}
    values["mailpiece.country"] = mp.get("country") or rc.get("country")
    return tuple((p, str(values[p])) for p in PIECE_ATTRS if values.get(p))


def merged_attrs(blobs: list[bytes]) -> dict[str, str]:
    """Each attribute's value from the most recently used piece part that has it (the last one an event sent)."""
    out: dict[str, str] = {}
    for blob in blobs:
        for path, value in part_attrs(blob):
            out.setdefault(path, value)
    return out


def decode_piece(raw: dict[bytes, bytes], source: str, piece_id: str) -> dict[str, Any]:
    """The public view of a compact piece hash (`read_piece`)."""
    f = fields(raw)
    state = f.get("s", b"").decode()
    stage = stage_of(state[:1]) if state else None
    blobs = {k[1:]: v for k, v in f.items() if k.startswith("_")}
    attrs = merged_attrs([blobs[r] for r in f.get("u", b"").decode().split(",") if r in blobs])
    events = []
    for name, value in f.items():
        if not _EVENT_FIELD.match(name.encode()):
            continue
        rec = value.decode()
        ev_stage = stage_of(rec[0])
        if rec[1] == "!":
            doc = json.loads(blobs[rec[2:]])
            if "stage" in doc:
                doc["stage"] = ev_stage
        else:
            head_tail, part_ref, pr_ref = _split_record(rec[1:])
            doc = decode(source, piece_id, ev_stage, head_tail, blobs[part_ref], blobs[pr_ref] if pr_ref else b"")
        events.append(doc)
    events.sort(key=lambda e: (_sort_time(e.get("occurred_at")), e.get("id", "")))
    return {"source": source, "id": piece_id, "kind": attrs.get("mailpiece.kind"),
            "country": attrs.get("mailpiece.country"), "stage": stage,
            "stage_at": time_of(state[1:]).isoformat() if stage else None, "events": events}


def summary(raw: dict[bytes, bytes]) -> dict[str, str | None]:
    """stage, stage_at, kind and country of a piece hash in either layout, without decoding its events."""
    if b"u" not in raw and b"s" not in raw:  # the first layout keeps them as fields
        return {k: (raw[k.encode()].decode() if k.encode() in raw else None)
                for k in ("stage", "stage_at", "kind", "country")}
    f = fields(raw)
    state = f.get("s", b"").decode()
    stage = stage_of(state[:1]) if state else None
    blobs = {k[1:]: v for k, v in f.items() if k.startswith("_")}
    attrs = merged_attrs([blobs[r] for r in f.get("u", b"").decode().split(",") if r in blobs])
    return {"stage": stage, "stage_at": time_of(state[1:]).isoformat() if stage else None,
            "kind": attrs.get("mailpiece.kind"), "country": attrs.get("mailpiece.country")}


def _split_record(rec: str) -> tuple[str, str, str]:
    """(record without refs, piece part ref, postrelay ref) of a compact record after its stage code."""
    te_occ, rcv, part_ref, pr_ref, rest = rec.split(",", 4)
    return f"{te_occ},{rcv},{rest}", part_ref, pr_ref


def _sort_time(text: Any) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return _EPOCH
