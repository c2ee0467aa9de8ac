"""bench.canary: slow chunks become windows; the child reports when its parent is done."""

from __future__ import annotations

import time

from bench.canary import MIN_WINDOW_S, Canary, windows

BASE = 0.0001  # 100 µs a chunk at full speed


def test_slow_chunks_close_together_form_one_window_and_lone_blips_are_dropped() -> None:
    chunks = [(10.000, BASE), (10.002, BASE * 20), (10.005, BASE * 25), (10.012, BASE * 10),  # one slow spell
              (11.000, BASE * 4),  # one chunk hit by an interrupt: shorter than MIN_WINDOW_S
              (12.000, BASE * 2.5)]  # under the factor
    found = windows(chunks, BASE)
    assert len(found) == 1
    start, end, worst = found[0]
    assert start == 10.002 and end == round(10.012 + BASE * 10, 4) and worst == 25.0
    assert end - start >= MIN_WINDOW_S


def test_the_canary_runs_until_its_parent_is_done_and_reports() -> None:
    with Canary() as canary:
        deadline = time.monotonic() + 0.3
        while time.monotonic() < deadline:  # the parent's own work; the canary samples meanwhile
            time.sleep(0.01)
    assert canary.report["chunk_us"] > 0 and canary.report["chunks"] > 10
    canary.report["windows"] = [[100.0, 100.05, 20.0]]
    assert canary.slow_in(100.04, 101.0) == [[100.0, 100.05, 20.0]]
    assert canary.slow_in(100.06, 101.0) == []
