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


# --- console indexes (`postrelay.stores.indexes`): on the queue Redis, never a cluster ------------------------
INDEX_PREFIX = f"{PREFIX}:ix"
INDEX_ALL = f"{INDEX_PREFIX}:all"
INDEX_CAMPAIGNS = f"{INDEX_PREFIX}:campaigns"


def piece_member(source: str, piece_id: str) -> str:
    """A mailpiece as a member of the index sets: `<source>:<id>` (sources never contain a colon)."""
    return f"{source}:{piece_id}"


def index_state(source: str, piece_id: str) -> str:
    """A piece's index state when the mailpieces live on another Redis (a cluster); else the piece hash holds it."""
    return f"{INDEX_PREFIX}:state:{{{source}:{piece_id}}}"


def index_set(kind: str, value: str) -> str:
    """Sorted set of pieces (scored by first occurrence) with `kind` (src, camp, stage, email, name) = `value`."""
    return f"{INDEX_PREFIX}:{kind}:{value}"


def campaign_funnel(campaign: str) -> str:
    """Hash: `pieces` and, per stage or event type, the campaign's pieces that reached it."""
    return f"{INDEX_PREFIX}:funnel:{campaign}"


def campaign_days(campaign: str) -> str:
    """Hash `<stage>|<YYYY-MM-DD>` -> pieces of the campaign that reached the stage that day."""
    return f"{INDEX_PREFIX}:days:{campaign}"


def campaign_transit(campaign: str) -> str:
    """Hash: days from mailed to processed_for_delivery (tenths) -> pieces of the campaign."""
    return f"{INDEX_PREFIX}:transit:{campaign}"
