"""`postrelay reindex`: build the console's indexes (`postrelay.core.stores.indexes`) for data stored before them.

Every stored event of every piece is applied to the index again, oldest first, with the very script the
worker runs. Indexing is idempotent, so pieces already indexed are left as they are and the command is safe
while receivers and workers run, and may be interrupted and run again. `rebuild=True` first drops every index
key and piece index state (run it with the workers stopped: events applied meanwhile would be lost to the
indexes until the next reindex).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from postrelay.core import keys
from postrelay.core.events import CanonicalEvent
from postrelay.core.stores.indexes import STATE_FIELDS, IndexWriter
from postrelay.core.stores.piece_codec import decode_piece

BATCH = 200
Progress = Callable[[int, int], None]


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def piece_ids(pieces: Any) -> Iterator[tuple[str, str]]:
    """(source, id) of every mailpiece hash in the store (a SCAN; on a cluster, over every primary)."""
    for raw in pieces.scan_iter(match=keys.PIECE_PREFIX + "*}", count=1000, _type="hash"):
        piece = keys.piece_of(raw)
        if piece:
            yield piece


def _drop(queue: Any, pieces: Any, found: list[tuple[str, str]], split: bool) -> None:
    for raw in queue.scan_iter(match=keys.INDEX_PREFIX + ":*", count=1000):
        queue.delete(raw)
    if not split:
        pipe = pieces.pipeline(transaction=False)
        for source, piece_id in found:
            pipe.hdel(keys.piece(source, piece_id), *STATE_FIELDS)
        pipe.execute()


def reindex(pieces: Any, queue: Any, retention: float, progress: Progress | None = None, rebuild: bool = False,
            batch: int = BATCH) -> dict[str, int]:
    """Index every stored event; returns {"pieces", "events", "skipped"} (skipped: unreadable event JSON)."""
    split = pieces is not queue
    found = list(piece_ids(pieces))
    if rebuild:
        _drop(queue, pieces, found, split)
    # the state in the piece hash keeps the piece's own expiry (retention 0: no EXPIRE); a separate state key
    # (mailpieces on a cluster) gets the timeline retention
    writer = IndexWriter(queue, retention if split else 0)
    counts = {"pieces": 0, "events": 0, "skipped": 0}
    for start in range(0, len(found), batch):
        chunk = found[start:start + batch]
        pipe = pieces.pipeline(transaction=False)
        for source, piece_id in chunk:
            pipe.hvals(keys.piece_events(source, piece_id))  # the first layout
            pipe.hgetall(keys.piece(source, piece_id))  # the compact one
        answers = pipe.execute()
        events: list[CanonicalEvent] = []
        for n, (source, piece_id) in enumerate(chunk):
            raws, state = answers[2 * n], answers[2 * n + 1]
            docs: list[Any] = list(raws)
            if not raws and state:
                try:
                    docs = decode_piece(state, source, piece_id)["events"]
                except (ValueError, KeyError, IndexError):
                    counts["skipped"] += 1
            parsed = []
            for doc in docs:
                try:
                    parsed.append(CanonicalEvent.model_validate_json(doc) if isinstance(doc, bytes | str)
                                  else CanonicalEvent.model_validate(doc))
                except ValueError:
                    counts["skipped"] += 1
            events += sorted(parsed, key=lambda e: (e.occurred_at, e.id))
        writer.apply_many(events, state_in_piece=not split)
        counts["pieces"] += len(chunk)
        counts["events"] += len(events)
        if progress is not None:
            progress(counts["pieces"], len(found))
    if progress is not None and not found:
        progress(0, 0)
    return counts
