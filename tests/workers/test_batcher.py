"""Forming batches (`workers.batching.Batcher`): by size, by linger, only into a free slot, bounded lines."""

from __future__ import annotations

from postrelay.workers.batching import BATCH, MAX_BATCHES, Batcher
from tests.workers.conftest import FakeClock


def make(clock: FakeClock, size: int = 3, linger: float = 1.0, busy: bool = False):
    sent: list[str] = []
    batcher = Batcher({"crm": size, "hook": 1}, {"crm": linger}, lambda dest, key: sent.append(key) or True,
                      lambda dest: busy, clock)
    return batcher, sent


def test_a_full_batch_goes_at_once_a_partial_one_after_its_linger():
    clock = FakeClock()
    batcher, sent = make(clock)
    assert batcher.batches("crm") and not batcher.batches("hook")  # batch_size 1: per event
    for n in range(4):
        assert batcher.add("crm", f"crm|e{n}", "")
    assert len(sent) == 1 and sent[0].startswith(BATCH)
    assert batcher.take(sent[0]) == ("crm", [(f"crm|e{n}", "") for n in range(3)])
    clock.advance(0.5)
    batcher.tick()
    assert len(sent) == 1  # e3 lingers
    clock.advance(0.6)
    batcher.tick()
    assert len(sent) == 2 and batcher.take(sent[1])[1] == [("crm|e3", "")]


def test_waiting_deliveries_are_held_until_their_batch_starts_and_lines_are_bounded():
    clock = FakeClock()
    batcher, sent = make(clock, busy=True)  # no free slot: nothing is sent, the line fills
    keys = [f"crm|e{n}" for n in range(3 * MAX_BATCHES)]
    assert all(batcher.add("crm", key, "") for key in keys)
    assert not batcher.add("crm", "crm|over", "")  # full: the caller makes it due again later
    assert batcher.add("crm", keys[0], "")  # already waiting: once
    assert sent == [] and sorted(batcher.held()) == sorted(keys)
    assert batcher.free() == 0 and batcher.room(50) == 50  # full, but its line never moved: not a brake
    assert batcher.flush_all() == MAX_BATCHES  # drain: sent whatever the slots
    assert sorted(batcher.held()) == sorted(keys)  # formed, not started: still kept alive
    for batch in sent:
        batcher.take(batch)
    assert batcher.held() == []
    for batch in sent:
        batcher.done(batch)
    assert batcher.free() == 3 * MAX_BATCHES and batcher.room(50) == 3 * MAX_BATCHES  # what its moving line takes
    assert all(batcher.add("crm", f"crm|n{n}", "") for n in range(3 * MAX_BATCHES))
    assert batcher.room(50) == 0  # full while its batches keep moving: the dispatcher waits


def test_a_lingered_partial_batch_waits_one_more_linger_while_its_destination_is_being_fed():
    clock = FakeClock()
    sent: list[str] = []
    fed = {"crm": True}
    batcher = Batcher({"crm": 3}, {"crm": 1.0}, lambda dest, key: sent.append(key) or True, lambda dest: False,
                      clock, feeding=lambda dest: fed[dest])
    batcher.add("crm", "crm|e0", "")
    clock.advance(1.1)
    batcher.tick()
    assert sent == []  # lingered, but the dispatcher is reading a backlog with deliveries for crm
    batcher.add("crm", "crm|e1", "")
    batcher.add("crm", "crm|e2", "")
    assert len(sent) == 1 and len(batcher.take(sent[0])[1]) == 3  # it filled up
    batcher.add("crm", "crm|e3", "")
    clock.advance(2.1)
    batcher.tick()
    assert len(sent) == 2  # at most one more linger, whatever the backlog
    batcher.add("crm", "crm|e4", "")
    fed["crm"] = False
    clock.advance(1.1)
    batcher.tick()
    assert len(sent) == 3 and batcher.take(sent[2])[1] == [("crm|e4", "")]  # no backlog: it goes at its linger
