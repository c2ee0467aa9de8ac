"""Fan-out: deliveries per second by one `postrelay worker` to a local no-op webhook destination, against
RQ's SimpleWorker running the same number of no-op jobs.

N canonical events (from the same signed PostGrid bodies, normalized by the receiver's own code) are put
straight into the ingest stream with their dedupe markers, as the receiver's script would, before the
worker starts; the worker then dispatches (timeline, routing, delivery jobs) and delivers them. The rate is
measured at the sink from the first delivery to the last (start-up excluded), the baseline from its first
job to its last. Redis commands per delivery come from `INFO commandstats`.
"""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime
from typing import Any

from bench.context import Context
from bench.payloads import body_for
from bench.procs import ROOT, python
from bench.report import Row, at_least
from bench.rqloop import enqueue_noops

SEEN_TTL = 3600


def prefill(ctx: Context, count: int, prefix: str = "f") -> None:
    """XADD `count` canonical events (one mailpiece each) to the ingest stream, with their dedupe markers."""
    from postrelay.core import keys
    from postrelay.receiver.providers import postgrid

    now = datetime.now(UTC)
    pipe = ctx.redis.r.pipeline(transaction=False)
    for i in range(count):
        event = postgrid.normalize(json.loads(body_for(prefix, i)), now).events[0]
        pipe.set(keys.seen(event.id), "1", nx=True, ex=SEEN_TTL)
        pipe.xadd(keys.INGEST_STREAM, {"e": event.model_dump_json()})
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()


def commands_per(ctx: Context, count: int) -> tuple[float, list[tuple[str, float]]]:
    """Redis commands executed per unit of work since the last CONFIG RESETSTAT (total, top 8)."""
    stats = ctx.redis.r.info("commandstats")
    per = sorted(((k.removeprefix("cmdstat_"), v["calls"] / count) for k, v in stats.items()), key=lambda kv: -kv[1])
    return sum(v for _, v in per), per[:8]


def measure_postrelay(ctx: Context, log_level: str = "WARNING") -> dict[str, Any]:
    """One postrelay worker draining N prefilled events to the sink."""
    p = ctx.profile
    n = p.fanout_events
    ctx.redis.reset()
    with ctx.sink() as sink:
        prefill(ctx, n)
        ctx.redis.r.config_resetstat()
        with ctx.worker(sink.url, log_level) as worker:
            cpu = worker.cpu_seconds()  # start-up (imports, connections) excluded
            delivered = sink.wait_for(n, p.fanout_timeout)
            cpu = worker.cpu_seconds() - cpu
            rss = worker.peak_rss_mb()
        times = sorted(a[1] for a in sink.stats()["arrivals"])
    total, top = commands_per(ctx, max(1, delivered))
    seconds = times[-1] - times[0] if len(times) > 1 else 0.0
    ctx.redis.reset()
    return {"delivered": delivered, "expected": n, "seconds": seconds,
            "rate": (len(times) - 1) / seconds if seconds > 0 else 0.0, "peak_rss_mb": rss,
            "cpu_ms_per_delivery": round(cpu / max(1, delivered) * 1000, 2),
            "redis_commands_per_delivery": round(total, 1), "top_commands": [(k, round(v, 1)) for k, v in top]}


def measure_rq(ctx: Context) -> dict[str, Any]:
    """RQ SimpleWorker (own process, burst) draining N no-op jobs."""
    n = ctx.profile.fanout_events
    ctx.redis.reset()
    enqueue_noops(ctx.redis.url, "bench-noop", n)
    ctx.redis.r.config_resetstat()
    proc = subprocess.run(python("-m", "bench.rqloop", "--redis", ctx.redis.url, "--queue", "bench-noop"), cwd=ROOT,
                          capture_output=True, text=True, timeout=ctx.profile.fanout_timeout + 60)
    if proc.returncode != 0:
        raise RuntimeError(f"bench.rqloop failed: {proc.stderr[-800:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["redis_commands_per_job"] = round(commands_per(ctx, max(1, out["jobs"]))[0], 1)
    ctx.redis.reset()
    return out


def rows(ctx: Context, pr: dict[str, Any], rq: dict[str, Any], info: dict[str, Any]) -> list[Row]:
    """Table rows."""
    missing = pr["expected"] - pr["delivered"] + (ctx.profile.fanout_events - rq["jobs"])
    r = Row("fan-out", "deliveries/s, 1 postrelay worker → no-op webhook", "/s", pr["rate"],
            "RQ SimpleWorker, no-op jobs", rq["rate"], "≥ 0.50x", errors=missing,
            note=f"{pr['delivered']:,}/{pr['expected']:,} delivered in {pr['seconds']:.1f} s; Redis commands per "
                 f"delivery {pr['redis_commands_per_delivery']} (top: "
                 + ", ".join(f"{k} {v}" for k, v in pr["top_commands"])
                 + f") vs {rq['redis_commands_per_job']} per no-op RQ job; worker CPU {pr['cpu_ms_per_delivery']} ms "
                 f"per delivery vs {rq['cpu_ms_per_job']} ms per no-op RQ job")
    r.met = at_least(r.ratio, 0.5) and missing == 0
    info_row = Row("fan-out", "deliveries/s, 1 postrelay worker at INFO (the default: a JSON log line per delivery)",
                   "/s", info["rate"], "RQ SimpleWorker, no-op jobs", rq["rate"], "",
                   errors=info["expected"] - info["delivered"],
                   note=f"worker CPU {info['cpu_ms_per_delivery']} ms per delivery; the row above runs at WARNING")
    rss = pr["peak_rss_mb"]
    main_rss = next(iter(rss.values()), None)
    return [r, info_row, Row("memory", "peak RSS, worker (postrelay worker) while delivering", "MB", main_rss,
                   "RQ SimpleWorker running no-op jobs", rq["peak_rss_mb"], "",
                   note=f"by pid (worker first, then RQ's scheduler child): {rss}")]


def run(ctx: Context) -> list[Row]:
    """Measure both and build the rows."""
    pr = measure_postrelay(ctx)
    rq = measure_rq(ctx)
    info = measure_postrelay(ctx, "INFO")
    ctx.raw["fanout"] = {"postrelay": pr, "rq_noop": rq, "postrelay_info": info}
    return rows(ctx, pr, rq, info)
