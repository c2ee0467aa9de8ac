"""Every Redis key postrelay uses, in one place.

Keys carry hash tags so Redis Cluster keeps what one script touches in one slot: the ingest stream and
its dedupe markers share `{in}`; a mailpiece's hash, timeline, events and types share `{<source>:<id>}`.
The `pr:piece:` keys live on the mailpiece store (`[server] redis_url`, which may be a Redis Cluster); every
other key lives on the queue Redis (`[server] queue_url`, default the same Redis), which is never a cluster.
"""

from __future__ import annotations

PREFIX = "pr"
INGEST_STREAM = f"{PREFIX}:{{in}}:stream"
INGEST_GROUP = "dispatch"
WORKER_HEARTBEATS = f"{PREFIX}:workers"
DLQ = f"{PREFIX}:dlq"
DLQ_INDEX = f"{PREFIX}:dlq:index"
FOLLOWUPS_DUE = f"{PREFIX}:fu:due"
RQ_QUEUE_NAME = "postrelay"
RQ_QUEUE = f"rq:queue:{RQ_QUEUE_NAME}"  # RQ's own key names (read by /metrics without importing RQ)
RQ_SCHEDULED = f"rq:scheduled:{RQ_QUEUE_NAME}"


def circuit(dest: str) -> str:
    """Hash with a destination's circuit-breaker state."""
    return f"{PREFIX}:cb:{{{dest}}}"


def seen(event_id: str) -> str:
    """Dedupe marker of a canonical event id (same slot as the ingest stream)."""
    return f"{PREFIX}:{{in}}:seen:{event_id}"


def piece(source: str, piece_id: str) -> str:
    """Hash with a mailpiece's current state."""
    return f"{PREFIX}:piece:{{{source}:{piece_id}}}"


def piece_timeline(source: str, piece_id: str) -> str:
    """Sorted set of a mailpiece's event ids, scored by occurrence time."""
    return f"{PREFIX}:piece:{{{source}:{piece_id}}}:timeline"


def piece_events(source: str, piece_id: str) -> str:
    """Hash event id -> canonical event JSON for a mailpiece."""
    return f"{PREFIX}:piece:{{{source}:{piece_id}}}:events"


def piece_types(source: str, piece_id: str) -> str:
    """Set of the canonical event types a mailpiece has had (follow-up `unless` checks)."""
    return f"{PREFIX}:piece:{{{source}:{piece_id}}}:types"


def link(token: str) -> str:
    """Hash with a tracking link's record (target, campaign, ref, expiry, revocation, binding)."""
    return f"{PREFIX}:link:{{{token}}}"


def link_held(token: str) -> str:
    """Sorted set of a link's visits recorded before it was bound to a piece (event JSON by occurrence)."""
    return f"{PREFIX}:link:{{{token}}}:held"


def link_ref(ref: str) -> str:
    """Set of the not-yet-bound link tokens minted with the user's key `ref`."""
    return f"{PREFIX}:link:ref:{{{ref}}}"


def link_visitor_key(period: int) -> str:
    """The random key of one rotation period for hashing link visitors (expires two periods later)."""
    return f"{PREFIX}:link:vkey:{period}"


def link_collapse(token: str, kind: str, visitor: str) -> str:
    """Ingest marker id collapsing one client's repeated visits to a link (passed to `seen`)."""
    return f"lnk:{token}:{kind}:{visitor}"
