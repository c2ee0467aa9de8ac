"""RQ baselines, run as their own process: RQ's SimpleWorker draining pre-enqueued no-op jobs.

`python -m bench.rqloop --redis URL --queue Q` works in burst mode (no fork per job, like `postrelay
worker`) and prints `{"jobs", "seconds", "rate", "peak_rss_mb"}`; the rate is measured from the first job's
start to the last one's, so worker start-up is not counted (the same rule as for postrelay's worker).
With `--scheduled N` it runs RQ's scheduler too (`enqueue_at` jobs) until N jobs ran and prints how late
each started after its due time (`late_ms`).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
from datetime import UTC, datetime

from redis import Redis
from rq import Queue, SimpleWorker

from bench import baselines
from bench.stats import summarize


def enqueue_noops(redis_url: str, queue: str, count: int, batch: int = 500) -> None:
    """Put `count` timed no-op jobs on `queue`, shaped like postrelay's delivery jobs (two string args)."""
    r = Redis.from_url(redis_url)
    q = Queue(queue, connection=r)
    for start in range(0, count, batch):
        jobs = [q.prepare_data(baselines.TIMED_NOOP_JOB, args=(f"sink|mev_{i:032d}", f"pr:seq:{{sink:postgrid:{i}}}"),
                               result_ttl=0, failure_ttl=86400)
                for i in range(start, min(count, start + batch))]
        with r.pipeline() as pipe:
            q.enqueue_many(jobs, pipeline=pipe)
            pipe.execute()
    r.close()


def schedule_noops(redis_url: str, queue: str, due: list[float]) -> None:
    """`enqueue_at` one late-noting no-op job per due time (epoch seconds)."""
    r = Redis.from_url(redis_url)
    q = Queue(queue, connection=r)
    for when in due:
        q.enqueue_at(datetime.fromtimestamp(when, UTC), baselines.LATE_NOOP_JOB, when, result_ttl=0)
    r.close()


def main(argv: list[str] | None = None) -> None:
    """Drain the queue, print the JSON result."""
    p = argparse.ArgumentParser(prog="python -m bench.rqloop")
    p.add_argument("--redis", required=True)
    p.add_argument("--queue", default="bench-noop")
    p.add_argument("--scheduled", type=int, default=0, help="run the scheduler until this many jobs ran")
    args = p.parse_args(argv)
    r = Redis.from_url(args.redis)
    worker = SimpleWorker([Queue(args.queue, connection=r)], connection=r)
    if args.scheduled:
        worker.work(with_scheduler=True, max_jobs=args.scheduled, logging_level="WARNING")
        json.dump({"jobs": len(baselines.LATE), "late_ms": summarize(baselines.LATE, 1000.0)}, sys.stdout)
        sys.stdout.write("\n")
        return
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_before = usage.ru_utime + usage.ru_stime
    worker.work(burst=True, logging_level="WARNING")
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime - cpu_before
    ran = baselines.RAN_AT
    seconds = ran[-1] - ran[0] if len(ran) > 1 else 0.0
    json.dump({"jobs": len(ran), "seconds": round(seconds, 3),
               "rate": round((len(ran) - 1) / seconds, 1) if seconds > 0 else 0.0,
               "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
               "cpu_ms_per_job": round(cpu / max(1, len(ran)) * 1000, 2)}, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
