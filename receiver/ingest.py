"""The request path's one Redis round trip: dedupe and enqueue atomically.

A Lua script, per canonical event, sets the dedupe marker (`SET NX EX window`) and, only if it was new,
appends the event to the ingest stream. Both happen or neither does, so a crash or a lost connection can
never leave an event marked seen but not queued: the provider's retry is then accepted, not dropped.
"""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis

from postrelay import keys
from postrelay.events import CanonicalEvent

_ENQUEUE = """
local accepted, duplicates = 0, 0
local ttl = ARGV[1]
for i = 2, #KEYS do
  if redis.call('SET', KEYS[i], '1', 'NX', 'EX', ttl) then
    redis.call('XADD', KEYS[1], '*', 'e', ARGV[i])
    accepted = accepted + 1
  else
    duplicates = duplicates + 1
  end
end
return {accepted, duplicates}
"""


class IngestQueue:
    """Durable, idempotent hand-off from the receiver to the workers."""

    def __init__(self, redis: Redis, dedupe_window: float) -> None:
        self.redis = redis
        self.ttl = max(1, int(dedupe_window))
        self._script = redis.register_script(_ENQUEUE)

    async def enqueue(self, events: Sequence[CanonicalEvent]) -> tuple[int, int]:
        """Queue events not seen within the dedupe window; returns (accepted, duplicates)."""
        if not events:
            return 0, 0
        script_keys = [keys.INGEST_STREAM, *(keys.seen(e.id) for e in events)]
        args = [self.ttl, *(e.model_dump_json() for e in events)]
        accepted, duplicates = await self._script(keys=script_keys, args=args)
        return int(accepted), int(duplicates)
