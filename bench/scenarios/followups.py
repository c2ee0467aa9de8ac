"""Follow-ups: N pending follow-ups scheduled; time to schedule, Redis memory, due → fired delay.

No `workers.followups.schedule_many` exists; what is measured goes through the scheduling interface the
dispatcher itself uses, `workers.followups.FollowupHandler(rt).stage(pipe, events)` (one MULTI/EXEC per
batch of 500 trigger events, as the dispatcher's batches), with the rule of bench/followups.toml (after
`delivered`, delay 0, so a trigger's `occurred_at` is its due time):

- scheduling N follow-ups due in a day (they stay pending): wall time, and Redis `used_memory` growth,
  against a plain ZADD of the same ids (pipelines of 500) and the memory of that bare sorted set;
- firing: with those N pending, M more are scheduled due over a few seconds while a `postrelay worker`
  runs (its scheduler loop polls every second); delay = the fired marker's `fired_at` - `scheduled_for`.
  Baseline: RQ's own scheduler (`enqueue_at` + `worker --with-scheduler`), M no-op jobs due over the same
  window (rounded up to whole seconds: RQ's schedule has 1 s resolution), delay = job start - due time.

If the module or these interfaces are missing, the rows print "n/a" with the reason; no number is made up.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.context import Context
from bench.payloads import body_for
from bench.procs import ROOT, Proc, python
from bench.report import Row
from bench.rqloop import schedule_noops
from bench.stats import summarize

CONFIG = ROOT / "bench" / "followups.toml"
NOT_YET = "n/a (scheduler not implemented yet)"
BATCH = 500
FIRE_LEAD = 1.0  # seconds from scheduling the firing set (worker already running) to its first due time
RQ_START = 1.5  # seconds an RQ worker needs to start (its jobs come due after that)


def scheduler_interface() -> str | None:
    """None when the interfaces used here exist, else why not."""
    if importlib.util.find_spec("postrelay.workers.followups") is None:
        return NOT_YET
    from postrelay.workers import followups

    for name in ("FollowupHandler", "Scheduler", "fired_key"):
        if not hasattr(followups, name):
            return f"n/a (workers.followups has no {name})"
    return None


def _triggers(count: int, prefix: str, first_due: float, spacing: float) -> Iterator[Any]:
    """`delivered` events for `count` distinct mailpieces, the i-th occurring at first_due + i * spacing."""
    from postrelay.receiver.providers import postgrid

    template = postgrid.normalize(json.loads(body_for(prefix, 0, stage=2)), datetime.now(UTC)).events[0]
    start = datetime.fromtimestamp(first_due, UTC)
    for i in range(count):
        piece = template.mailpiece.model_copy(update={"id": f"letter_{prefix}{i:08d}"})
        yield template.model_copy(update={"id": f"mev_{prefix}{i:027d}", "mailpiece": piece,
                                          "occurred_at": start + timedelta(seconds=i * spacing)})


def _runtime(ctx: Context, sink_url: str) -> Any:
    from postrelay.core.config import load_config
    from postrelay.workers.runtime import Runtime

    os.environ.update(ctx.env(sink_url))
    return Runtime(config=load_config(CONFIG), redis=ctx.redis.r)


def _schedule(rt: Any, events: list[Any]) -> float:
    """Stage `events` through FollowupHandler in transactions of BATCH; returns seconds taken."""
    from postrelay.workers.followups import FollowupHandler

    handler = FollowupHandler(rt)
    started = time.perf_counter()
    for at in range(0, len(events), BATCH):
        pipe = rt.redis.pipeline(transaction=True)
        handler.stage(pipe, events[at:at + BATCH])
        pipe.execute()
    return time.perf_counter() - started


def _zadd_baseline(ctx: Context, ids: list[str]) -> tuple[float, int]:
    """Seconds and bytes for a bare ZADD of `ids` in pipelines of BATCH (then removed)."""
    r = ctx.redis.r
    before = ctx.redis.used_memory()
    started = time.perf_counter()
    for at in range(0, len(ids), BATCH):
        pipe = r.pipeline(transaction=True)
        pipe.zadd("bench:zadd", {i: 1e9 + n for n, i in enumerate(ids[at:at + BATCH], at)})
        pipe.execute()
    seconds = time.perf_counter() - started
    used = ctx.redis.used_memory() - before
    r.delete("bench:zadd")
    return seconds, used


def _fired_delays(ctx: Context, fids: list[str], timeout: float) -> tuple[list[float], int]:
    from postrelay.workers.followups import fired_key

    r = ctx.redis.r
    deadline = time.monotonic() + timeout
    raw: list[Any] = []
    while time.monotonic() < deadline:
        raw = r.mget([fired_key(f) for f in fids])
        if all(raw):
            break
        time.sleep(0.25)
    delays = []
    for item in raw:
        if item:
            data = json.loads(item)
            delays.append(datetime.fromisoformat(data["fired_at"]).timestamp()
                          - datetime.fromisoformat(data["scheduled_for"]).timestamp())
    return delays, sum(1 for item in raw if not item)


def measure(ctx: Context) -> dict[str, Any]:
    """Bulk scheduling + memory, then firing delay with a worker, then RQ's scheduler baseline."""
    from postrelay.workers.followups import followup_id

    p = ctx.profile
    n, m, window = p.followups, p.followups_fired, p.followups_window
    out: dict[str, Any] = {"pending": n, "fired_set": m}
    ctx.redis.reset()
    with ctx.sink() as sink:
        rt = _runtime(ctx, sink.url)
        rule = rt.config.followups[0].name
        bulk = list(_triggers(n, "b", time.time() + 86400, 0.001))
        ids = [followup_id(rule, e.source, e.mailpiece.id) for e in bulk]
        mem0 = ctx.redis.used_memory()
        out["schedule_s"] = _schedule(rt, bulk)
        out["memory_bytes"] = ctx.redis.used_memory() - mem0
        out["pending_after"] = int(ctx.redis.r.zcard("pr:fu:due"))
        out["zadd_s"], out["zadd_bytes"] = _zadd_baseline(ctx, ids)
        worker = Proc(f"fu-worker-{int(time.time())}", python("-m", "postrelay.cli", "worker", "--config", str(CONFIG)),
                      ctx.logs, ctx.env(sink.url)).start()
        try:
            deadline = time.monotonic() + 30
            while not ctx.redis.r.hlen("pr:workers"):
                if not worker.alive() or time.monotonic() > deadline:
                    raise RuntimeError(f"postrelay worker did not start: {worker.log_tail()}")
                time.sleep(0.05)
            firing = list(_triggers(m, "d", time.time() + FIRE_LEAD, window / max(1, m)))
            _schedule(rt, firing)
            fids = [followup_id(rule, e.source, e.mailpiece.id) for e in firing]
            delays, missing = _fired_delays(ctx, fids, FIRE_LEAD + window + 30)
        finally:
            worker.stop()
            rt.close()
    out["fire_delay_ms"] = summarize(delays, 1000.0)
    out["not_fired"] = missing
    out["rq"] = _rq_baseline(ctx, m, window)
    ctx.redis.reset()
    return out


def _rq_baseline(ctx: Context, m: int, window: float) -> dict[str, Any]:
    ctx.redis.reset()
    first = time.time() + RQ_START
    # RQ keeps scheduled times in whole seconds (a job due at x.7 runs from x.0 on): due times are rounded up
    # to whole seconds so "late" means the same thing for both.
    due = [float(math.ceil(first + i * window / max(1, m))) for i in range(m)]
    schedule_noops(ctx.redis.url, "bench-scheduled", due)
    proc = subprocess.run(python("-m", "bench.rqloop", "--redis", ctx.redis.url, "--queue", "bench-scheduled",
                                 "--scheduled", str(m)), cwd=ROOT, capture_output=True, text=True,
                          timeout=FIRE_LEAD + window + 90)
    if proc.returncode != 0:
        raise RuntimeError(f"bench.rqloop --scheduled failed: {proc.stderr[-800:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def rows(ctx: Context, res: dict[str, Any]) -> list[Row]:
    """Table rows."""
    n = f"{res['pending']:,}"
    errors = res["not_fired"] + (res["pending"] - res["pending_after"]) + (res["fired_set"] - res["rq"]["jobs"])
    out = [
        Row("follow-ups", f"time to schedule {n} pending", "s", res["schedule_s"], f"bare ZADD of the {n} ids",
            res["zadd_s"], "", errors=res["pending"] - res["pending_after"],
            note=f"{res['pending'] / res['schedule_s']:,.0f} follow-ups/s through FollowupHandler.stage in "
                 f"transactions of {BATCH}; {res['pending_after']:,} pending afterwards"),
        Row("follow-ups", f"Redis memory per pending follow-up ({n} pending)", "B", res["memory_bytes"] / res["pending"],
            "bare sorted-set member (same ids)", res["zadd_bytes"] / res["pending"], "",
            note=f"{res['memory_bytes'] / 1e6:.1f} MB for {n} (record hash + due zset + per-piece set)"),
    ]
    for q in ("p50", "p99"):
        out.append(Row("follow-ups", f"due → fired delay {q} ({res['fired_set']:,} due over "
                                     f"{ctx.profile.followups_window:g} s, {n} pending)", "ms",
                       res["fire_delay_ms"].get(q), f"RQ enqueue_at → job start {q}", res["rq"]["late_ms"].get(q),
                       "", errors=errors if q == "p50" else 0,
                       note=f"max {res['fire_delay_ms'].get('max', float('nan')):.0f} ms, {res['not_fired']} not fired; "
                            f"RQ max {res['rq']['late_ms'].get('max', float('nan')):.0f} ms" if q == "p50" else ""))
    return out


def na_rows(ctx: Context, reason: str) -> list[Row]:
    """The same rows, printed as n/a."""
    n = f"{ctx.profile.followups:,}"
    names = (f"time to schedule {n} pending", f"Redis memory per pending follow-up ({n} pending)",
             "due → fired delay p50", "due → fired delay p99")
    return [Row("follow-ups", name, "", None, "—", None, na=reason) for name in names]


def run(ctx: Context) -> list[Row]:
    """Measure (or print n/a until the scheduler exists)."""
    reason = scheduler_interface()
    if reason:
        return na_rows(ctx, reason)
    res = measure(ctx)
    ctx.raw["followups"] = res
    return rows(ctx, res)
