"""Experiments behind the performance proposals in bench/RESULTS.md; not part of `python -m bench`.

`python -m bench.proposals receiver` — the stock receiver against the *same* app with proposed changes
patched in (bench-only, nothing in receiver/ is edited): `no_requestlog` drops the edge middleware
(`receiver.edge.Edge`: request log, counters, limits, error answers), `orjson` parses bodies with orjson
(when importable, e.g. `pip install --target DIR orjson` and `BENCH_EXTRA_PATH=DIR`). Saturation in
interleaved rounds and a fixed rate, same drivers as the bench. (Landed from here: coalescing concurrent
requests' enqueues into one script call, receiver/ingest.py; the body read without a task or timer per
request, receiver/body.py `Deadlines`, which replaced the `timeout_cm` variant.)

`python -m bench.proposals worker` — Redis round trips per delivery, attributed to the code that made them
(RQ's worker loop vs postrelay's delivery job vs the dispatcher), by counting `send_packed_command` calls
inside a `postrelay worker` draining N prefilled events to the no-op sink.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import drivers
from bench.context import CONFIG, Context
from bench.payloads import write_requests
from bench.procs import BenchRedis, Proc, free_port, python
from bench.profiles import FULL

EXTRA_PATH_ENV = "BENCH_EXTRA_PATH"


VARIANTS = ("no_requestlog", "orjson")


def _orjson_json_module() -> Any:
    """A stand-in for the `json` module as receiver.providers.base uses it, parsing with orjson."""
    import json as std_json
    import types

    import orjson

    return types.SimpleNamespace(loads=orjson.loads, JSONDecodeError=std_json.JSONDecodeError, dumps=std_json.dumps)


def make_variant_app() -> Any:
    """ASGI factory: the stock app (config from $POSTRELAY_CONFIG) with the changes named in
    $BENCH_VARIANT (comma-separated, see VARIANTS)."""
    import postrelay.receiver.app as receiver_app
    from postrelay.core.config import load_runtime_config
    from postrelay.receiver.edge import Edge
    from postrelay.receiver.providers import base

    variant = set(filter(None, os.environ.get("BENCH_VARIANT", "").split(",")))
    unknown = variant - set(VARIANTS)
    if unknown:
        raise ValueError(f"unknown BENCH_VARIANT parts {sorted(unknown)}; known: {VARIANTS}")
    if "orjson" in variant:
        base.json = _orjson_json_module()
    app = receiver_app.create_app(load_runtime_config())
    if "no_requestlog" in variant:
        app.user_middleware = [m for m in app.user_middleware if m.cls is not Edge]  # log, count, limits, errors
    return app


def _serve(args: argparse.Namespace) -> None:
    import uvicorn

    os.environ["BENCH_VARIANT"] = args.variant
    uvicorn.run("bench.proposals:make_variant_app", factory=True, host="127.0.0.1", port=args.port,
                log_level="warning", access_log=False)


def _orjson_importable() -> bool:
    try:
        import orjson  # noqa: F401
    except ImportError:
        return False
    return True


def receiver_experiment(rounds: int, seconds: float, rates: Sequence[int]) -> dict[str, Any]:
    """Stock vs patched receivers (and bare Starlette), same machine, same drivers."""
    work = Path(tempfile.mkdtemp(prefix="postrelay-proposals-"))
    redis = BenchRedis().start()
    ctx = Context(FULL, work, redis, write_requests(work / "ingest.txt", 100_000, "p"))
    out: dict[str, Any] = {"saturation": collections.defaultdict(list), "rates": {}}
    procs: dict[str, tuple[Proc, int]] = {}
    try:
        env = {**ctx.env(), "POSTRELAY_CONFIG": str(CONFIG)}
        if os.environ.get(EXTRA_PATH_ENV):
            env["PYTHONPATH"] = os.environ[EXTRA_PATH_ENV]
        variants = [("stock", ["-m", "postrelay.cli", "serve", "--config", str(CONFIG)]),
                    ("no_requestlog", ["-m", "bench.proposals", "serve-variant", "no_requestlog"])]
        if _orjson_importable():
            variants.append(("no_requestlog,orjson",
                             ["-m", "bench.proposals", "serve-variant", "no_requestlog,orjson"]))
        variants.append(("bare", ["-m", "bench.baselines", "bare"]))
        for name, argv in variants:
            port = free_port()
            procs[name] = (Proc(f"{name}-{port}", python(*argv, "--port", str(port)), ctx.logs, env).start(), port)
        for proc, port in procs.values():
            proc.wait_port(port)
        for _ in range(rounds):
            for name, (_, port) in procs.items():
                redis.reset()
                sat = drivers.saturate(port, ctx.ingest.path, ctx.ingest.count, 0, 32, 1.0, seconds)
                out["saturation"][name].append({"rps": round(sat["rps"]), "p50": sat["latency_ms"]["p50"],
                                                "p99": sat["latency_ms"]["p99"], "errors": sat["errors"],
                                                "in_stream": redis.r.xlen("pr:{in}:stream")})
        for rate in rates:
            for name, (_, port) in procs.items():
                redis.reset()
                run = drivers.fixed_rate(port, ctx.ingest.path, 0, rate, 1.0, seconds, 5.0)
                out["rates"][f"{name}@{rate}"] = {"p50": run["latency_ms"]["p50"], "p99": run["latency_ms"]["p99"],
                                                  "errors": run["errors"], "throughput": run["throughput"]}
        out["peak_rss_mb"] = {name: proc.peak_rss_mb() for name, (proc, _) in procs.items()}
    finally:
        for proc, _ in procs.values():
            proc.stop()
        redis.stop()
        shutil.rmtree(work, ignore_errors=True)
    return out


# --- worker: round trips per delivery by caller --------------------------------------------------------------

def _caller(frame: Any) -> str:
    """`rq:<function>` or `<module>:<function>` of the nearest frame outside redis-py."""
    root = str(Path(__file__).resolve().parent.parent) + os.sep
    while frame is not None:
        path = frame.f_code.co_filename
        if os.sep + "redis" + os.sep not in path:
            if os.sep + "rq" + os.sep in path:
                return f"rq:{frame.f_code.co_name}"
            if path.startswith(root):
                return f"{path[len(root):].removesuffix('.py').replace(os.sep, '.')}:{frame.f_code.co_name}"
            return f"other:{frame.f_code.co_name}"
        frame = frame.f_back
    return "unknown"


def _counted_worker(args: argparse.Namespace) -> None:
    """Run `postrelay worker` in this process with every Redis send counted by caller; dump at exit."""
    import redis.connection

    counts: collections.Counter[str] = collections.Counter()
    original = redis.connection.AbstractConnection.send_packed_command

    def counting(self: Any, command: Any, check_health: bool = True) -> None:
        counts[_caller(sys._getframe(1))] += 1
        original(self, command, check_health)

    redis.connection.AbstractConnection.send_packed_command = counting  # type: ignore[method-assign]
    from postrelay.core.config import load_runtime_config
    from postrelay.workers.worker import run_worker

    try:
        run_worker(load_runtime_config(args.config))
    finally:
        Path(args.dump).write_text(json.dumps(dict(counts)))


def worker_experiment(events: int) -> dict[str, Any]:
    """Round trips per delivery by caller, for `events` deliveries."""
    from bench.scenarios.fanout import prefill

    work = Path(tempfile.mkdtemp(prefix="postrelay-proposals-"))
    redis = BenchRedis().start()
    ctx = Context(FULL, work, redis, write_requests(work / "unused.txt", 1, "u"))
    dump = work / "counts.json"
    try:
        with ctx.sink() as sink:
            prefill(ctx, events)
            proc = Proc("counted-worker", python("-m", "bench.proposals", "counted-worker", "--config", str(CONFIG),
                                                 "--dump", str(dump)), ctx.logs, ctx.env(sink.url)).start()
            started = time.monotonic()
            delivered = sink.wait_for(events, 120)
            elapsed = time.monotonic() - started
            os.kill(proc.pid, signal.SIGTERM)
            proc.proc.wait(30)  # type: ignore[union-attr]
            proc.stop()
        counts = json.loads(dump.read_text())
    finally:
        redis.stop()
        shutil.rmtree(work, ignore_errors=True)
    per = {k: round(v / max(1, delivered), 2) for k, v in sorted(counts.items(), key=lambda kv: -kv[1])}
    return {"delivered": delivered, "seconds_incl_startup": round(elapsed, 1),
            "round_trips_per_delivery": round(sum(counts.values()) / max(1, delivered), 1), "by_caller": per}


def _extend_path() -> None:
    extra = os.environ.get(EXTRA_PATH_ENV)
    if extra and extra not in sys.path:
        sys.path.append(extra)


def main(argv: list[str] | None = None) -> None:
    """Subcommands: receiver, worker (and the internal serve-group-commit, counted-worker)."""
    p = argparse.ArgumentParser(prog="python -m bench.proposals")
    sub = p.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("receiver")
    q.add_argument("--rounds", type=int, default=3)
    q.add_argument("--seconds", type=float, default=4.0)
    q.add_argument("--rate", type=int, action="append", default=[])
    q = sub.add_parser("worker")
    q.add_argument("--events", type=int, default=1000)
    q = sub.add_parser("serve-variant")
    q.add_argument("variant", help=f"comma-separated subset of {VARIANTS}")
    q.add_argument("--port", type=int, required=True)
    q = sub.add_parser("counted-worker")
    q.add_argument("--config", required=True)
    q.add_argument("--dump", required=True)
    args = p.parse_args(argv)
    _extend_path()
    if args.cmd == "receiver":
        print(json.dumps(receiver_experiment(args.rounds, args.seconds, args.rate or [2000, 5000]), indent=1))
    elif args.cmd == "worker":
        print(json.dumps(worker_experiment(args.events), indent=1))
    elif args.cmd == "serve-variant":
        _serve(args)
    else:
        _counted_worker(args)


if __name__ == "__main__":
    main()
