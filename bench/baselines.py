"""Baseline receivers the real one is compared with, served by uvicorn exactly like `postrelay serve`.

- `bare`: a Starlette endpoint that reads the body, parses the JSON and answers 200 (the ceiling);
- `xadd`: `bare` plus one async `XADD` of the raw body (the cost of one Redis round trip);
- `naive`: `bare` plus `rq.Queue.enqueue` of the body, sync, through Starlette's thread pool (what a
  straightforward RQ-based receiver does);
- `redirect`: a Starlette endpoint `GET /t/{token}` answering the 302 postrelay's tracking links answer.

All listen on the same path as postrelay's PostGrid webhook so every driver replays the same request file.
Run one with `python -m bench.baselines NAME --port P [--workers N]`; Redis comes from `$BENCH_REDIS_URL`.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bench.payloads import VISIT_TARGET, WEBHOOK_PATH

REDIS_ENV = "BENCH_REDIS_URL"
BASELINE_STREAM = "bench:baseline:stream"
NOOP_JOB = "bench.baselines.noop"
TIMED_NOOP_JOB = "bench.baselines.timed_noop"
LATE_NOOP_JOB = "bench.baselines.late_noop"
RAN_AT: list[float] = []
LATE: list[float] = []


def noop(*args: object) -> None:
    """An RQ job that does nothing."""


def timed_noop(*args: object) -> None:
    """An RQ job that only notes when it ran (in this process: SimpleWorker runs jobs in-process)."""
    RAN_AT.append(time.perf_counter())


def late_noop(due: float) -> None:
    """An RQ job scheduled for epoch `due` that notes how late it started."""
    LATE.append(time.time() - due)


def make_bare() -> Starlette:
    """Parse JSON, answer 200."""

    async def webhook(request: Request) -> JSONResponse:
        json.loads(await request.body())
        return JSONResponse({"accepted": 1})

    return Starlette(routes=[Route(WEBHOOK_PATH, webhook, methods=["POST"])])


def make_xadd() -> Starlette:
    """Parse JSON, one async XADD of the raw body, answer 200."""
    from redis.asyncio import Redis

    redis = Redis.from_url(os.environ[REDIS_ENV])

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await redis.aclose()

    async def webhook(request: Request) -> JSONResponse:
        body = await request.body()
        json.loads(body)
        await redis.xadd(BASELINE_STREAM, {"e": body})
        return JSONResponse({"accepted": 1})

    return Starlette(routes=[Route(WEBHOOK_PATH, webhook, methods=["POST"])], lifespan=lifespan)


def make_naive() -> Starlette:
    """Parse JSON, `rq.Queue.enqueue` per request (sync client, thread pool), answer 200."""
    from redis import Redis
    from rq import Queue

    queue = Queue("bench-naive", connection=Redis.from_url(os.environ[REDIS_ENV]))

    async def webhook(request: Request) -> JSONResponse:
        body = await request.body()
        json.loads(body)
        await run_in_threadpool(queue.enqueue, NOOP_JOB, body.decode())
        return JSONResponse({"accepted": 1})

    return Starlette(routes=[Route(WEBHOOK_PATH, webhook, methods=["POST"])])


def make_redirect() -> Starlette:
    """`GET /t/{token}` answered with the same 302 as postrelay's links (the ceiling for the redirect row)."""
    from starlette.responses import RedirectResponse

    async def visit(request: Request) -> RedirectResponse:
        return RedirectResponse(VISIT_TARGET, status_code=302, headers={"Cache-Control": "no-store"})

    return Starlette(routes=[Route("/t/{token}", visit, methods=["GET"])])


FACTORIES = {"bare": "make_bare", "xadd": "make_xadd", "naive": "make_naive", "redirect": "make_redirect"}


def main(argv: list[str] | None = None) -> None:
    """Serve one baseline with uvicorn (uvloop + httptools, no access log), like `postrelay serve`."""
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m bench.baselines")
    parser.add_argument("name", choices=sorted(FACTORIES))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    uvicorn.run(f"bench.baselines:{FACTORIES[args.name]}", factory=True, host=args.host, port=args.port,
                workers=args.workers, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
