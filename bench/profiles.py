"""Run sizes: the full benchmark (< 10 minutes) and the CI smoke mode (< 60 s, same rows, tiny loads)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    """Every knob of a run."""

    name: str
    requests: int  # signed requests pre-generated for the ingest runs
    sat_connections: int  # closed-loop connections at saturation
    sat_warmup: float
    sat_duration: float
    sat_rounds: int  # interleaved rounds over all targets; the median is reported
    rates: tuple[int, ...]  # fixed offered loads, req/s
    rate_warmup: float
    rate_duration: float
    rate_rounds: int  # interleaved rounds per fixed rate (bare and postrelay); the median p99 is reported
    drain: float  # seconds a fixed-rate run waits for stragglers
    e2e_rate: int  # events/s of the end-to-end run
    e2e_low_rate: int  # a rate one worker sustains, for reference
    e2e_warmup: float
    e2e_duration: float
    e2e_drain: float  # seconds to wait for the last delivery
    second_wave: int  # second events for existing mailpieces (memory per event)
    fanout_events: int
    fanout_timeout: float
    followups: int  # pending follow-ups scheduled
    followups_fired: int  # follow-ups made due during the run, for the due → fired delay
    followups_window: float  # seconds over which those come due
    batching_events: int  # events for as many contacts into the HubSpot stand-in, batched
    batching_per_event: int  # the same, delivered per event (extrapolated to batching_events)
    batching_timeout: float


FULL = Profile(
    name="full", requests=100_000, sat_connections=32, sat_warmup=1.0, sat_duration=4.0, sat_rounds=5,
    rates=(500, 2000, 5000), rate_warmup=1.0, rate_duration=4.0, rate_rounds=3, drain=5.0,
    e2e_rate=500, e2e_low_rate=50, e2e_warmup=1.0, e2e_duration=6.0, e2e_drain=60.0, second_wave=1000,
    fanout_events=3000, fanout_timeout=90.0, followups=100_000, followups_fired=2000,
    followups_window=8.0, batching_events=20_000, batching_per_event=200, batching_timeout=300.0,
)

SMOKE = Profile(
    name="smoke", requests=20_000, sat_connections=8, sat_warmup=0.0, sat_duration=1.0, sat_rounds=1,
    rates=(200, 400), rate_warmup=0.1, rate_duration=0.5, rate_rounds=1, drain=3.0,
    e2e_rate=40, e2e_low_rate=20, e2e_warmup=0.2, e2e_duration=0.8, e2e_drain=15.0, second_wave=20,
    fanout_events=60, fanout_timeout=20.0, followups=1000, followups_fired=40,
    followups_window=1.0, batching_events=200, batching_per_event=6, batching_timeout=30.0,
)
