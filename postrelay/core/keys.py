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
POISON = f"{PREFIX}:{{in}}:poison"  # stream entries no worker could parse
WORKER_HEARTBEATS = f"{PREFIX}:workers"
DLQ = f"{PREFIX}:dlq"
DLQ_INDEX = f"{PREFIX}:dlq:index"
FOLLOWUPS_DUE = f"{PREFIX}:fu:due"
# Every delivery that must make progress, scored by when a worker must look at it next: its due time
# (first attempt, retry, circuit / rate-limit wait) or, while it is claimed or running, its lease deadline.
DELIVERIES_DUE = f"{PREFIX}:dlv:inflight"
DELIVERY_JOBS = f"{PREFIX}:dlv:jobs"  # legacy (RQ job ids of deliveries, before the due-time loop): cleared
STATS = f"{PREFIX}:stats"
STATS_HIST_PREFIX = f"{PREFIX}:stats:hist:"
STATS_TYPES_PREFIX = f"{PREFIX}:stats:types:"
STATS_SOURCES_PREFIX = f"{PREFIX}:stats:sources:"
RQ_QUEUE_NAME = "postrelay"
RQ_QUEUE = f"rq:queue:{RQ_QUEUE_NAME}"  # RQ's own key names (read by /metrics without importing RQ)
RQ_SCHEDULED = f"rq:scheduled:{RQ_QUEUE_NAME}"

_RECORD = f"{PREFIX}:dlv:{{"
_SEQ = f"{PREFIX}:seq:{{"


def circuit(dest: str) -> str:
    """Hash with a destination's circuit-breaker state (`postrelay.core.stores.circuit`)."""
    return f"{PREFIX}:cb:{{{dest}}}"


def circuit_probe(dest: str) -> str:
    """Marker held by the one half-open probe delivery of a destination."""
    return f"{PREFIX}:cb:{{{dest}}}:probe"


def rate_limit(dest: str) -> str:
    """GCRA theoretical arrival time of a destination's rate limit."""
    return f"{PREFIX}:rl:{{{dest}}}"


def rate_learned(dest: str) -> str:
    """Hash with what a destination's rate-limit headers taught (`interval` ms, `hold_until` ms)."""
    return f"{PREFIX}:rl:{{{dest}}}:hdr"


def seen(event_id: str) -> str:
    """Dedupe marker of a canonical event id (same slot as the ingest stream)."""
    return f"{PREFIX}:{{in}}:seen:{event_id}"


PIECE_PREFIX = f"{PREFIX}:piece:{{"  # every mailpiece key starts so (SCAN patterns)
PIECE_EVENTS_SUFFIX = ":events"
MIGRATE_STATUS = f"{PREFIX}:migrate"  # `postrelay migrate`'s progress (`postrelay.core.stores.migrate`)


def piece(source: str, piece_id: str) -> str:
    """Hash with a mailpiece's current state."""
    return f"{PIECE_PREFIX}{source}:{piece_id}}}"


def piece_timeline(source: str, piece_id: str) -> str:
    """Sorted set of a mailpiece's event ids, scored by occurrence time."""
    return f"{PREFIX}:piece:{{{source}:{piece_id}}}:timeline"


def piece_events(source: str, piece_id: str) -> str:
    """Hash event id -> canonical event JSON for a mailpiece."""
    return piece(source, piece_id) + PIECE_EVENTS_SUFFIX


def piece_types(source: str, piece_id: str) -> str:
    """Set of the canonical event types a mailpiece has had (follow-up `unless` checks)."""
    return f"{PREFIX}:piece:{{{source}:{piece_id}}}:types"


def piece_keys(source: str, piece_id: str) -> list[str]:
    """A mailpiece's keys in both layouts, as its scripts take them: piece hash, timeline, events, types."""
    return [piece(source, piece_id), piece_timeline(source, piece_id), piece_events(source, piece_id),
            piece_types(source, piece_id)]


def piece_of(key: str | bytes, suffix: str = "") -> tuple[str, str] | None:
    """(source, mailpiece id) of the key `piece(source, id) + suffix` (e.g. `PIECE_EVENTS_SUFFIX`); None for
    any other key."""
    text = key.decode() if isinstance(key, bytes) else key
    if not text.startswith(PIECE_PREFIX) or not text.endswith("}" + suffix):
        return None
    source, _, piece_id = text[len(PIECE_PREFIX):len(text) - len(suffix) - 1].partition(":")
    return (source, piece_id) if piece_id else None


# --- deliveries (`postrelay.core.stores.deliveries`); a delivery key is `<destination>|<event id>[|<tag>]` ---

def delivery_record(key: str) -> str:
    """Hash holding a delivery's record (event JSON, extra, created, attempts, sequence key)."""
    return f"{_RECORD}{key}}}"


DELIVERY_RECORD_PATTERN = f"{_RECORD}*}}"  # SCAN match for every delivery record


def delivery_of_record(record_key: str) -> str:
    """The delivery key inside a record key (inverse of `delivery_record`)."""
    return record_key[len(_RECORD):-1]


def delivery_done(key: str) -> str:
    """Success marker of a delivery (JSON: remote id, time): a delivery whose marker exists is never re-sent."""
    return f"{PREFIX}:done:{{{key}}}"


def delivery_memo(key: str) -> str:
    """Remote ids of an adapter's completed steps for a delivery."""
    return f"{PREFIX}:memo:{{{key}}}"


def delivery_lock(key: str) -> str:
    """Execution lock so two workers never run the same delivery at once."""
    return f"{PREFIX}:lock:{{{key}}}"


def delivery_seq(dest: str, source: str, piece_id: str) -> str:
    """Per (destination, mailpiece) FIFO of event ids: only its head is delivered."""
    return f"{_SEQ}{dest}:{source}:{piece_id}}}"


def seq_destination(seq: str) -> str:
    """The destination a sequence key belongs to."""
    return seq[len(_SEQ):].split(":", 1)[0]


def destination_paused(dest: str) -> str:
    """Flag set while a destination is paused."""
    return f"{PREFIX}:dest:{{{dest}}}:paused"


def destination_parked(dest: str) -> str:
    """Deliveries (JSON [key, seq]) that came due while their destination was paused."""
    return f"{PREFIX}:dest:{{{dest}}}:parked"


# --- follow-ups (`postrelay.core.stores.followups`); a follow-up id is `<rule>|<source>|<mailpiece id>` ---

def followup(fid: str) -> str:
    """Hash with a pending follow-up."""
    return f"{PREFIX}:fu:{{{fid}}}"


def followup_fired(fid: str) -> str:
    """Marker: this follow-up fired."""
    return f"{PREFIX}:fu:fired:{{{fid}}}"


def followup_cancelled(fid: str) -> str:
    """Marker (JSON: time, by whom): an operator cancelled this follow-up (the piece's page shows it)."""
    return f"{PREFIX}:fu:cancelled:{{{fid}}}"


def followup_piece(source: str, piece_id: str) -> str:
    """Set of a piece's pending follow-up ids."""
    return f"{PREFIX}:fu:piece:{{{source}:{piece_id}}}"


# --- stats (`postrelay.core.stats`) ---

def stats_hist(name: str) -> str:
    """Hash holding histogram `name`."""
    return STATS_HIST_PREFIX + name


def stats_minute(minute: int) -> str:
    """Per-type event counts of one minute (epoch // 60)."""
    return f"{STATS_TYPES_PREFIX}{minute}"


def stats_sources_minute(minute: int) -> str:
    """Per-source event counts of one minute (epoch // 60; the console's chart)."""
    return f"{STATS_SOURCES_PREFIX}{minute}"


# --- console indexes (`postrelay.core.stores.indexes`): on the queue Redis, never a cluster ------------------------
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


# --- tracking links (`postrelay.core.stores.links`, `postrelay.core.stores.link_binding`) ---

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


# --- mailings (`postrelay.core.stores.mailings`); a mailing id is `ml_<hash of its idempotency key>` ---

MAILINGS_DUE = f"{PREFIX}:ml:due"  # mailings a worker must work on, scored by when (claimed with a lease)
MAILINGS_INDEX = f"{PREFIX}:ml:index"  # every mailing by creation time


def mailing(mid: str) -> str:
    """Hash with one mailing's record."""
    return f"{PREFIX}:ml:{{{mid}}}"


def mailing_cooldown(trigger: str, recipient: str) -> str:
    """A trigger's cooldown marker for one recipient (hashed address); its value is the mailing id."""
    return f"{PREFIX}:ml:cool:{{{trigger}}}:{recipient}"


def mailing_cap(day: str, trigger: str | None = None) -> str:
    """Pieces created on a UTC day (`YYYY-MM-DD`), in total or for one trigger."""
    return f"{PREFIX}:ml:cap:{day}" + (f":{trigger}" if trigger else "")


# --- the console's sign-in (`postrelay.receiver.ui.session`) ---

def ui_session(sid_hash: str) -> str:
    """Hash of one console session (by the hash of its session id)."""
    return f"{PREFIX}:ui:session:{sid_hash}"


def ui_signin_failures(address: str) -> str:
    """Counter of failed console sign-ins from one client address."""
    return f"{PREFIX}:ui:signin-failures:{address}"
