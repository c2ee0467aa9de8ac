"""The one Retry-After parser and the one backoff (postrelay/core/backoff.py)."""

from __future__ import annotations

import random

import httpx

from postrelay.adapters.base import retry_after_seconds
from postrelay.core.backoff import Backoff, jittered, retry_after
from postrelay.receiver import backfill

NOW = 1_780_000_000.0


def test_retry_after_keeps_fractions_and_reads_dates():
    assert retry_after("1.5") == 1.5 and retry_after(" 120 ") == 120.0
    assert retry_after("Thu, 28 May 2026 20:27:30 GMT", now=NOW) == 50.0
    assert retry_after("Thu, 28 May 2026 20:00:00 GMT", now=NOW) == 0.0  # in the past: now
    assert retry_after("-3") == 0.0
    for bad in (None, "", "soon", "nan", "inf", "-inf", "Thu, 99 Foo"):
        assert retry_after(bad) is None, bad
    assert retry_after("86400", cap=3600) == 3600


def test_adapters_and_backfill_use_the_same_parser():
    resp = httpx.Response(429, headers={"Retry-After": "0.25"})
    assert retry_after_seconds(resp) == 0.25
    assert backfill.retry_after("0.25") == 0.25
    assert backfill.retry_after("10000000") == backfill.MAX_RETRY_AFTER


def test_jittered_backoff_stays_in_its_band_and_under_the_ceiling():
    rng = random.Random(1)
    for attempt in range(1, 20):
        band = min(60.0, 1.0 * 2 ** (attempt - 1))
        assert band / 2 <= jittered(attempt, 1.0, 60.0, rng) <= band


def test_loop_backoff_doubles_to_its_ceiling_and_resets():
    b = Backoff(0.1, 5.0)
    assert [round(b.next(), 2) for _ in range(8)] == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    b.reset()
    assert b.next() == 0.1
