"""The request path's one Redis round trip: dedupe and enqueue atomically.

A Lua script, per canonical event, checks the dedupe marker and, only if it is absent, appends the event to
the ingest stream and then sets the marker (`SET EX window`). Both happen or neither does, so a crash, a lost
connection or a failing XADD can never leave an event marked seen but not queued: the provider's retry is then
accepted, not dropped. (Redis does not roll back a script that errors half-way, hence XADD before SET.)
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
  if redis.call('EXISTS', KEYS[i]) == 0 then
    redis.call('XADD', KEYS[1], '*', 'e', ARGV[i])
    redis.call('SET', KEYS[i], '1', 'EX', ttl)
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
