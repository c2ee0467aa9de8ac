"""Prometheus `/metrics`: this receiver's own counters, plus what the workers keep in Redis.

In-process (no Redis call on the request path): `postrelay_events_received_total{source,outcome}`,
`postrelay_events_rejected_total{source,reason}`, `postrelay_signature_failures_total{source}`,
`postrelay_ingest_seconds`, `postrelay_http_requests_total{path,status}`,
`postrelay_client_aborts_total{path}`, and for tracking links `postrelay_link_visits_total{kind,outcome}` and
`postrelay_link_non_human_total{kind,reason}`. With several uvicorn worker
processes, set `PROMETHEUS_MULTIPROC_DIR` (`postrelay serve --workers N` does it) and every process's
counters are summed at scrape time (prometheus-client multiprocess mode).

Read from Redis at scrape time, in one pipelined round trip (`redis_families`): queue depth, DLQ size,
circuit states, follow-ups pending, worker heartbeat age, and the counters and histograms workers write to
`postrelay.core.stats` (deliveries by outcome, events processed by type, end-to-end delay, follow-up lag).
Every receiver exports the same Redis-derived values; aggregate them with `max without (instance, pod)`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.utils import floatToGoString
from redis.asyncio import Redis

from postrelay.core import keys, stats
from postrelay.core.config import KNOWN_SOURCES, Config
from postrelay.core.stores import circuit as breaker
from postrelay.core.stores.deliveries import OVERDUE_AFTER

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST
INGEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
OUTCOMES = ("accepted", "duplicate", "ignored", "rejected")
HISTOGRAM_NAMES = {"end_to_end": "postrelay_end_to_end_seconds", "followup_lag": "postrelay_followup_lag_seconds"}
HISTOGRAM_HELP = {
    "end_to_end": "Delay from an event's receipt (received_at) to its delivery to a destination",
    "followup_lag": "Delay from a follow-up's due time to its firing",
}


class ReceiverMetrics:
    """The receiver process's counters and histogram, and the registry `/metrics` renders."""

    def __init__(self, config: Config) -> None:
        disable_created_metrics()  # no `*_created` series (multiprocess mode has none either)
        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        self.registry = CollectorRegistry()
        # In multiprocess mode the values live in mmap files; a MultiProcessCollector sums every process's.
        reg = None if self.multiprocess else self.registry
        self.events = Counter("postrelay_events_received_total",
                              "Provider events per source and outcome (accepted, duplicate, ignored; rejected "
                              "counts requests)", ["source", "outcome"], registry=reg)
        self.rejected = Counter("postrelay_events_rejected_total", "Rejected webhook requests by source and reason",
                                ["source", "reason"], registry=reg)
        self.signature_failures = Counter("postrelay_signature_failures_total",
                                          "Webhooks whose signature, token or timestamp was rejected (401)",
                                          ["source"], registry=reg)
        self.ingest = Histogram("postrelay_ingest_seconds", "Webhook handling time, request to answer",
                                buckets=INGEST_BUCKETS, registry=reg)
        self.http = Counter("postrelay_http_requests_total", "HTTP requests by route and status",
                            ["path", "status"], registry=reg)
        self.client_aborts = Counter("postrelay_client_aborts_total",
                                     "Requests whose client disconnected before the body was received (not answered)",
                                     ["path"], registry=reg)
        self.link_visits = Counter("postrelay_link_visits_total",
                                   "Tracking-link visits by kind (open, goal) and outcome (recorded, collapsed, "
                                   "missed: Redis down, visitor redirected; not_found; gone: expired or revoked)",
                                   ["kind", "outcome"], registry=reg)
        self.link_non_human = Counter("postrelay_link_non_human_total",
                                      "Tracking-link requests redirected without an event: HEAD, prefetch, "
                                      "known scanner", ["kind", "reason"], registry=reg)
        if self.multiprocess:
            from prometheus_client import multiprocess

            multiprocess.MultiProcessCollector(self.registry)
        for source in KNOWN_SOURCES:  # series exist from the start, so rate() sees the first increment
            if getattr(config.sources, source) is not None:
                for outcome in OUTCOMES:
                    self.events.labels(source, outcome)
                self.signature_failures.labels(source)
        # labelled children by label values: `.labels()` takes a lock and builds a tuple on every call
        self._events: dict[tuple[str, str], Any] = {}
        self._http: dict[tuple[str, int], Any] = {}
        self._links: dict[tuple[str, str, str], Any] = {}

    def _event_counter(self, source: str, outcome: str) -> Any:
        child = self._events.get((source, outcome))
        if child is None:
            child = self._events[(source, outcome)] = self.events.labels(source, outcome)
        return child

    def http_request(self, path: str, status: int) -> None:
        """Count one answered HTTP request (`path` is the route label)."""
        child = self._http.get((path, status))
        if child is None:
            child = self.http.labels(path, str(status))
            if len(self._http) < 1000:  # labels are route templates and status codes: a bounded set anyway
                self._http[(path, status)] = child
        child.inc()

    def client_abort(self, path: str) -> None:
        """Count one request abandoned by its client mid-body (`path` is the route label)."""
        self.client_aborts.labels(path).inc()
    def link(self, kind: str, outcome: str, non_human: bool = False) -> None:
        """Count one tracking-link request: a visit outcome, or (`non_human`) why it was not a visit."""
        key = (kind, outcome, "n" if non_human else "v")
        child = self._links.get(key)
        if child is None:
            counter = self.link_non_human if non_human else self.link_visits
            child = self._links[key] = counter.labels(kind, outcome)
        child.inc()

    def accepted(self, source: str, accepted: int, duplicates: int, ignored: int) -> None:
        """Count one answered webhook."""
        if accepted:
            self._event_counter(source, "accepted").inc(accepted)
        if duplicates:
            self._event_counter(source, "duplicate").inc(duplicates)
        if ignored:
            self._event_counter(source, "ignored").inc(ignored)

    def rejected_request(self, source: str, reason: str, status: int) -> None:
        """Count one refused webhook request (4xx or 5xx)."""
        self.events.labels(source, "rejected").inc()
        self.rejected.labels(source, reason).inc()
        if status == 401:
            self.signature_failures.labels(source).inc()

    def render(self, families: Iterable[Metric] = ()) -> bytes:
        """The text exposition: this process's (or all processes') metrics, then `families`."""
        out = generate_latest(self.registry)
        extra = list(families)
        if extra:
            out += generate_latest(_Static(extra))
        return out


class _Static:
    """A collector yielding pre-built metric families (read from Redis for this scrape)."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


async def read_redis_state(redis: Redis, config: Config, now: float) -> dict[str, Any]:
    """Everything the Redis-derived metrics need, in one pipelined round trip."""
    dests = list(config.destinations)
    pipe = redis.pipeline(transaction=False)
    pipe.xlen(keys.INGEST_STREAM)
    pipe.zcount(keys.DELIVERIES_DUE, "-inf", now)
    pipe.zcount(keys.DELIVERIES_DUE, f"({now}", "+inf")
    pipe.hlen(keys.DLQ)
    pipe.zcard(keys.FOLLOWUPS_DUE)
    pipe.zcount(keys.FOLLOWUPS_DUE, "-inf", now)
    pipe.hgetall(keys.WORKER_HEARTBEATS)
    pipe.hgetall(stats.STATS)
    for name in stats.HISTOGRAMS:
        pipe.hgetall(stats.hist_key(name))
    for dest in dests:
        pipe.hmget(keys.circuit(dest), "state", "open_until")
    pipe.zcount(keys.DELIVERIES_DUE, "-inf", now - OVERDUE_AFTER)
    pipe.zrange(keys.DELIVERIES_DUE, 0, 0, withscores=True)
    res = await pipe.execute()
    overdue_deliveries, head = res.pop(-2), res.pop(-1)
    stream, queued, scheduled, dlq, pending, overdue, beats, raw_stats = res[:8]
    hists = dict(zip(stats.HISTOGRAMS, res[8:8 + len(stats.HISTOGRAMS)], strict=True))
    circuits = {d: breaker.state_name(s, until, now) for d, (s, until) in
                zip(dests, res[8 + len(stats.HISTOGRAMS):], strict=True)}
    deliveries, events = stats.parse_stats(raw_stats)
    return {"stream": int(stream), "queued": int(queued), "scheduled": int(scheduled), "dlq": int(dlq),
            "followups_pending": int(pending), "followups_overdue": int(overdue),
            "heartbeats": stats.heartbeat_ages(beats, now), "deliveries": deliveries, "events": events,
            "histograms": hists, "circuits": circuits, "deliveries_overdue": int(overdue_deliveries),
            "deliveries_oldest_due_age": max(0.0, now - head[0][1]) if head else 0.0}


def redis_families(state: dict[str, Any], config: Config) -> list[Metric]:
    """Metric families built from `read_redis_state`."""
    stale = config.server.worker_stale_after
    ages = state["heartbeats"]
    out: list[Metric] = [
        _gauge("postrelay_redis_up", "1 when this receiver reached Redis for this scrape", 1),
        _gauge("postrelay_queue_depth", "Work waiting: ingest stream entries plus deliveries due now",
               state["stream"] + state["queued"]),
        _gauge("postrelay_ingest_backlog", "Ingest stream entries not yet processed by a worker", state["stream"]),
        _gauge("postrelay_deliveries_queued", "Deliveries due now, not yet claimed by a worker", state["queued"]),
        _gauge("postrelay_deliveries_scheduled",
               "Deliveries due later (retries, circuit and rate-limit waits) or running under a worker's lease",
               state["scheduled"]),
        _gauge("postrelay_deliveries_overdue",
               f"Deliveries due more than {OVERDUE_AFTER:g} s ago and still not claimed by any worker",
               state["deliveries_overdue"]),
        _gauge("postrelay_deliveries_oldest_due_age_seconds",
               "Seconds since the earliest due time in the delivery due-time set (0 when nothing is due)",
               state["deliveries_oldest_due_age"]),
        _gauge("postrelay_dlq_size", "Dead-lettered deliveries stored", state["dlq"]),
        _gauge("postrelay_followups_pending", "Scheduled follow-ups not yet fired", state["followups_pending"]),
        _gauge("postrelay_followups_overdue", "Follow-ups past their due time, not yet claimed by a worker",
               state["followups_overdue"]),
        _gauge("postrelay_workers_alive", f"Workers with a heartbeat younger than {stale:g} s",
               sum(1 for a in ages.values() if a <= stale)),
    ]
    if ages:  # absent until a worker ever registered
        out.append(_gauge("postrelay_worker_heartbeat_age_seconds", "Seconds since the newest worker heartbeat",
                          min(ages.values())))
    circuit = GaugeMetricFamily("postrelay_circuit_state", "Circuit breaker: 0 closed, 1 half-open, 2 open",
                                labels=["destination"])
    for dest, name in state["circuits"].items():
        circuit.add_metric([dest], breaker.CODES.get(name, 0))
    out.append(circuit)
    deliveries = CounterMetricFamily("postrelay_deliveries_total",
                                     "Delivery attempts by destination and outcome (ok, retry, permanent, dead)",
                                     labels=["destination", "outcome"])
    counts = dict(state["deliveries"])
    for dest in config.destinations:
        for outcome in stats.OUTCOMES:
            counts.setdefault((dest, outcome), 0)
    for (dest, outcome), n in sorted(counts.items()):
        deliveries.add_metric([dest, outcome], n)
    out.append(deliveries)
    processed = CounterMetricFamily("postrelay_events_processed_total", "Events processed by workers, by type",
                                    labels=["type"])
    for etype, n in sorted(state["events"].items()):
        processed.add_metric([etype], n)
    out.append(processed)
    for name, raw in state["histograms"].items():
        buckets, total, _ = stats.parse_histogram(name, raw)
        out.append(HistogramMetricFamily(HISTOGRAM_NAMES[name], HISTOGRAM_HELP[name],
                                         buckets=[(floatToGoString(le), n) for le, n in buckets], sum_value=total))
    return out


def redis_down_families() -> list[Metric]:
    """What a scrape exports about Redis when it cannot be read."""
    return [_gauge("postrelay_redis_up", "1 when this receiver reached Redis for this scrape", 0)]
