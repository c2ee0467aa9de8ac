"""Forming batches: deliveries of a destination with `batch_size > 1` wait here, in memory, for their batch.

The worker hands every delivery it starts (just staged by the dispatcher, claimed by the due loop, a piece's
next update) to `Batcher.add` instead of its executor when the destination batches. A destination's batch
goes to the executor as one item (`BATCH` + id; `workers.delivery.batch.attempt_batch` runs it) as soon as it
holds `batch_size` deliveries, or `batch_linger` after its first one came, and only while the destination
has a free attempt slot (`per_destination_concurrency`): a backlog forms full batches instead of many small ones.
A partial batch whose linger ran out while this worker's dispatcher is still reading a backlog of the ingest
stream that brings deliveries for its destination (`feeding`) waits up to one more `batch_linger` to fill up:
a dispatcher short of CPU does not turn a backlog into partial batches.

Nothing here is durable, and nothing needs to be: each waiting delivery keeps its due score in the due-time
set (a lease deadline, kept fresh by the worker's housekeeping through `held`), so if this process dies, its
waiting deliveries come due for any worker when their leases run out. Each destination holds at most
`MAX_BATCHES` batches' worth; past that a delivery is made due again a second later (`add` says False), and
while a destination's batches keep moving the dispatcher reads no more from the stream than its line can take
(`room`).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable

BATCH = "\x00batch:"  # executor item key prefix of a formed batch (no delivery key starts with a NUL)
MAX_BATCHES = 2  # batches' worth of deliveries one destination may hold here
Items = list[tuple[str, str]]  # (delivery key, sequence)


class Batcher:
    """Per-destination lines of deliveries waiting for their batch."""

    def __init__(self, sizes: dict[str, int], lingers: dict[str, float], submit: Callable[[str, str], bool],
                 busy: Callable[[str], bool], clock: Callable[[], float], hold: float = 1.0,
                 feeding: Callable[[str], bool] = lambda dest: False) -> None:
        self.sizes = {dest: size for dest, size in sizes.items() if size > 1}
        self.lingers = lingers
        self._submit = submit  # (dest, batch key) -> accepted
        self._busy = busy  # dest -> no free attempt slot now
        self._feeding = feeding  # dest -> more of its deliveries are being read from a backlog now
        self.clock = clock
        self.hold = hold
        self._lock = threading.Lock()
        self._pending: dict[str, Items] = {dest: [] for dest in self.sizes}
        self._keys: dict[str, set[str]] = {dest: set() for dest in self.sizes}
        self._since: dict[str, float] = {}
        self._moved: dict[str, float] = {}
        self._batches: dict[str, tuple[str, Items]] = {}  # formed, in the executor's line or running
        self._started: set[str] = set()  # batches whose attempt runs
        self._ids = itertools.count(1)

    def batches(self, dest: str) -> bool:
        """True when deliveries of `dest` go through batches."""
        return dest in self.sizes

    def add(self, dest: str, key: str, seq: str) -> bool:
        """Queue a delivery for its destination's next batch; False when the destination's line is full."""
        with self._lock:
            keys = self._keys[dest]
            if key in keys:
                return True
            line = self._pending[dest]
            if len(line) >= self.sizes[dest] * MAX_BATCHES:
                return False
            if not line:
                self._since[dest] = self.clock()
            line.append((key, seq))
            keys.add(key)
            full = len(line) >= self.sizes[dest]
        if full:
            self._flush(dest, force=False)
        return True

    def tick(self, longest: float = 0.05) -> float:
        """Send every batch that is full or has lingered long enough; seconds until the next may be due."""
        now = self.clock()
        wait = longest
        for dest in self.sizes:
            with self._lock:
                since = self._since.get(dest) if self._pending[dest] else None
            if since is None:
                continue
            linger = self.lingers.get(dest, 1.0)
            left = since + linger - now
            if 0 >= left > -linger and len(self._pending[dest]) < self.sizes[dest] and self._feeding(dest):
                left += linger  # lingered, but more are on their way: it may fill up (one more linger at most)
            if left <= 0 or len(self._pending[dest]) >= self.sizes[dest]:
                self._flush(dest, force=False)
            else:
                wait = min(wait, left)
        return max(0.005, wait)

    def flush_all(self) -> int:
        """Send every waiting delivery now, whatever its linger (`drain`); returns how many batches."""
        sent = 0
        for dest in self.sizes:
            while self._flush(dest, force=True):
                sent += 1
        return sent

    def _flush(self, dest: str, force: bool) -> bool:
        """Hand `dest`'s next batch to the executor (unless it has no free slot and not `force`)."""
        if not force and self._busy(dest):
            return False
        with self._lock:
            line = self._pending[dest]
            if not line:
                return False
            batch, rest = line[:self.sizes[dest]], line[self.sizes[dest]:]
            self._pending[dest] = rest
            self._keys[dest].difference_update(key for key, _ in batch)  # a piece's next update may come back
            self._since[dest] = self.clock()  # the rest have waited since at least now
            batch_key = f"{BATCH}{dest}:{next(self._ids)}"
            self._batches[batch_key] = (dest, batch)
            self._moved[dest] = time.monotonic()
        try:
            accepted = self._submit(dest, batch_key)
        except RuntimeError:  # shutting down: the leases bring the deliveries back
            accepted = False
        if not accepted:
            with self._lock:
                self._batches.pop(batch_key, None)
                self._pending[dest] = batch + self._pending[dest]
                self._keys[dest].update(key for key, _ in batch)
            return False
        return True

    def take(self, batch_key: str) -> tuple[str, Items]:
        """The destination and deliveries of a batch the executor now runs. They leave `held`: the attempt
        gives each a fresh lease deadline and then its own due time (a retry's must not be overwritten)."""
        with self._lock:
            dest, items = self._batches[batch_key]
            self._started.add(batch_key)
            return dest, items

    def done(self, batch_key: str) -> None:
        """A batch's attempt is over: its deliveries are no longer this batcher's to keep alive."""
        with self._lock:
            self._batches.pop(batch_key, None)
            self._started.discard(batch_key)

    def held(self) -> list[str]:
        """Keys of every delivery waiting for or inside a batch (their lease deadlines must stay fresh)."""
        with self._lock:
            return ([key for keys in self._keys.values() for key in keys]
                    + [key for batch, (_, items) in self._batches.items() if batch not in self._started
                       for key, _ in items])

    def free(self) -> int:
        """Deliveries the batching destinations' lines could take now (the due loop claims that many more)."""
        with self._lock:
            return sum(max(0, self.sizes[dest] * MAX_BATCHES - len(line)) for dest, line in self._pending.items())

    def room(self, wanted: int) -> int:
        """How many stream entries (up to `wanted`) the dispatcher may read: no more than the line of a
        destination whose batches keep moving can take (0 while it is full: the dispatcher then waits, and what
        it reads is not turned away); a line that has not moved for `hold` seconds does not hold the other
        destinations back."""
        now = time.monotonic()
        with self._lock:
            for dest, line in self._pending.items():
                if now - self._moved.get(dest, 0.0) < self.hold:
                    wanted = min(wanted, self.sizes[dest] * MAX_BATCHES - len(line))
        return max(0, wanted)

    def only(self, dests: list[str]) -> bool:
        """True when every one of `dests` batches (the due loop then claims only what the lines can take)."""
        return all(dest in self.sizes for dest in dests)
