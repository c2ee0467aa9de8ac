"""The due-time loop: claims deliveries whose time has come and hands them to this worker's executor.

Every delivery that must make progress is in `pr:dlv:inflight`, scored by when a worker must look at it
next (`postrelay.core.stores.deliveries`). Each worker's loop claims what is due (`due_claim.lua` pushes a claimed
one's score a lease ahead, so no other worker takes it meanwhile) and runs it. This one mechanism covers
first attempts whose worker died before starting them, retries, circuit-open and rate-limit waits, the
re-queue of a destination at its concurrency cap, replays and resumes, and deliveries of killed workers (their
lease runs out): all keyed by a due time in Redis, so they are on time to the loop's tick (at most `longest`,
0.5 s) through any Redis or worker restart — no scheduler process or lock to lose.
"""

from __future__ import annotations

from collections.abc import Callable

from postrelay.core.replies import scored
from postrelay.core.scripts import lua
from postrelay.core.stores import deliveries
from postrelay.workers.runtime import Runtime


class DueLoop:
    """Claims due deliveries (at most what the executor has room for) and submits them, all at once
    (`submit` makes those it could not start due again and says how many it started)."""

    def __init__(self, rt: Runtime, submit: Callable[[list[tuple[str, str]]], int], room: Callable[[], int],
                 batch: int = 200) -> None:
        self.rt = rt
        self.submit = submit
        self.room = room
        self.batch = batch
        self.started = 0  # how many of the last claim started

    def run_once(self) -> int:
        """Claim and submit what is due now; returns how many."""
        n = min(self.batch, self.room())
        if n <= 0:
            return 0
        rt = self.rt
        claimed = lua("due_claim")(rt.redis, keys=[deliveries.DUE], args=[rt.clock(), rt.config.delivery.lease, n])
        # the attempt reads the sequence from the record
        self.started = self.submit([(claimed[i].decode(), "") for i in range(0, len(claimed), 2)]) if claimed else 0
        return len(claimed) // 2

    def tick(self, longest: float = 0.5) -> float:
        """Run what is due, then how long to sleep: until the next due time, at most `longest`."""
        count = self.run_once()
        if count >= self.batch and self.started:  # more may be due (not when nothing could start: no spin)
            return 0.0
        head = scored(self.rt.redis.zrange(deliveries.DUE, 0, 0, withscores=True))
        if not head:
            return longest
        return min(longest, max(0.005, head[0][1] - self.rt.clock()))


def keep_alive(rt: Runtime, held: list[str]) -> None:
    """Push the lease deadlines of deliveries waiting in this process's executor past the next claim."""
    if held:
        rt.redis.zadd(deliveries.DUE, dict.fromkeys(held, rt.clock() + rt.config.delivery.lease), xx=True)
