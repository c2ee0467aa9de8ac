"""Ingest: postrelay's PostGrid webhook against the baselines, at saturation and at fixed offered loads.

For each target (bare Starlette, bare + XADD, naive rq enqueue, postrelay; 1 uvicorn worker, and bare and
postrelay with 2) one server process is started; Redis is flushed before every measurement, so each one
replays request lines from 0 and no event id is ever seen twice by the same Redis. Saturation is measured
in `sat_rounds` interleaved rounds and the median round is reported. postrelay's runs are
checked afterwards: the ingest stream must hold exactly one entry per request answered 2xx.
"""

from __future__ import annotations

from typing import Any

from bench import drivers
from bench.context import Context, Server
from bench.report import Row, at_least, at_most

SATURATION_TARGETS = (("bare", 1), ("xadd", 1), ("naive", 1), ("postrelay", 1), ("postrelay-info", 1), ("bare", 2),
                      ("postrelay", 2))
RATE_TARGETS = ("bare", "naive", "postrelay")
P99_TARGET_RATE = 2000
P99_TARGET_MS = 15.0
LABEL = {"bare": "bare Starlette", "xadd": "bare + 1 async XADD", "naive": "naive rq.enqueue", "postrelay": "postrelay",
         "postrelay-info": "postrelay at INFO"}
STREAM = "pr:{in}:stream"


def _stream_len(ctx: Context, kind: str) -> int | None:
    return int(ctx.redis.r.xlen(STREAM)) if kind.startswith("postrelay") else None


def _check_accepted(result: dict[str, Any], accepted: int | None, answered: int, in_flight: int) -> None:
    """Record how many answered requests reached the stream (unless the request file wrapped: duplicates).

    wrk stops counting at its deadline while up to one request per connection is still in flight, and the
    warm-up run ends the same way: those are accepted but not counted, so `accepted` may exceed `answered`
    by up to `in_flight`. Fewer accepted than answered means events were lost (or wrongly deduped).
    """
    if accepted is not None and not result.get("wrapped"):
        result["accepted_in_stream"] = accepted
        result["answered_2xx"] = answered
        result["lost_or_deduped"] = max(0, answered - accepted)
        result["accepted_unanswered"] = max(0, accepted - answered)
        result["unexplained_extra"] = max(0, accepted - answered - in_flight)


def _saturation_round(ctx: Context, servers: dict[tuple[str, int], Server]) -> dict[tuple[str, int], dict[str, Any]]:
    p = ctx.profile
    out = {}
    for (kind, workers), srv in servers.items():
        ctx.redis.reset()
        cpu = srv.proc.cpu_seconds()
        # the same concurrency per server process: a 2-process server gets twice the connections
        sat = drivers.saturate(srv.port, ctx.ingest.path, ctx.ingest.count, 0, p.sat_connections * workers,
                               p.sat_warmup, p.sat_duration)
        served = sat["warmup_requests"] + sat["requests"]
        sat["server_cpu_us_per_request"] = round((srv.proc.cpu_seconds() - cpu) / max(1, served) * 1e6, 1)
        if not kind.startswith("postrelay"):
            sat["wrapped"] = False  # only postrelay dedupes; a baseline sees repeated ids as new requests
        answered = sat["warmup_requests"] + sat["requests"] - sat["errors"]
        _check_accepted(sat, _stream_len(ctx, kind), answered, 2 * p.sat_connections)
        out[(kind, workers)] = sat
    return out


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the median throughput; the others' throughputs are kept for the notes."""
    ordered = sorted(runs, key=lambda r: r["rps"])
    chosen = dict(ordered[len(ordered) // 2])
    chosen["rounds_rps"] = [round(r["rps"]) for r in runs]
    chosen["cpu_us"] = sorted(r["server_cpu_us_per_request"] for r in runs)[len(runs) // 2]
    chosen["errors"] = sum(int(r["errors"]) for r in runs)
    for key in ("lost_or_deduped", "unexplained_extra"):
        chosen[key] = sum(int(r.get(key) or 0) for r in runs)
    return chosen


def _rate_run(ctx: Context, srv: Server, kind: str, rate: int) -> dict[str, Any]:
    p = ctx.profile
    ctx.redis.reset()
    run = drivers.fixed_rate(srv.port, ctx.ingest.path, 0, rate, p.rate_warmup, p.rate_duration, p.drain)
    _check_accepted(run, _stream_len(ctx, kind), run["all_2xx"], run["timeouts"] + run["lost"])
    return run


def _median_p99(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the median p99; every round's p99 is kept for the notes, errors are summed."""
    ordered = sorted(runs, key=lambda r: r["latency_ms"].get("p99", float("inf")))
    chosen = dict(ordered[len(ordered) // 2])
    chosen["rounds_p99"] = [r["latency_ms"].get("p99") for r in runs]
    for key in ("errors", "lost_or_deduped", "unexplained_extra"):
        chosen[key] = sum(int(r.get(key) or 0) for r in runs)
    return chosen


def measure(ctx: Context) -> dict[tuple[str, int], dict[str, Any]]:
    """All servers up at once (idle ones cost nothing); saturation rounds interleave the targets, so slow
    drifts of a shared machine hit every target alike; then the fixed rates, each in `rate_rounds`
    interleaved rounds over bare and postrelay (the round with the median p99 is reported) and one naive run."""
    p = ctx.profile
    with ctx.servers(list(SATURATION_TARGETS)) as servers:
        rounds = [_saturation_round(ctx, servers) for _ in range(p.sat_rounds)]
        res: dict[tuple[str, int], dict[str, Any]] = {
            key: {"saturation": _median_run([r[key] for r in rounds])} for key in servers}
        for rate in p.rates:
            runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in RATE_TARGETS}
            for i in range(p.rate_rounds):
                for kind in RATE_TARGETS:
                    if kind == "naive" and i > 0:
                        continue  # a reference row; one round is enough (and it is slow when overloaded)
                    runs[kind].append(_rate_run(ctx, servers[(kind, 1)], kind, rate))
            for kind, kind_runs in runs.items():
                res[(kind, 1)][f"rate_{rate}"] = _median_p99(kind_runs)
        for key, srv in servers.items():
            res[key]["peak_rss_mb"] = srv.proc.peak_rss_mb()
    ctx.redis.reset()
    return res


def _errors(result: dict[str, Any]) -> int:
    """Failed requests plus events answered 2xx that are not in the stream (or more in it than sent)."""
    return int(result["errors"]) + int(result.get("lost_or_deduped") or 0) + int(result.get("unexplained_extra") or 0)


def _sat_note(sat: dict[str, Any]) -> str:
    lat = sat["latency_ms"]
    note = (f"median of rounds {sat['rounds_rps']} req/s ({sat['driver']}, {sat['requests']:,} requests in the "
            f"median window); latency p50 {lat['p50']:.2f} / p99 {lat['p99']:.2f} ms; server CPU "
            f"{sat['cpu_us']:.0f} µs per request (median round)")
    if "accepted_in_stream" in sat:
        note += f"; stream holds {sat['accepted_in_stream']:,} of {sat['answered_2xx']:,} answered"
    if sat.get("wrapped"):
        note += "; WARNING: request file wrapped (duplicate ids sent)"
    return note


def rows(ctx: Context, res: dict[tuple[str, int], dict[str, Any]]) -> list[Row]:
    """Table rows from the measurements."""
    bare, xadd, naive = res[("bare", 1)], res[("xadd", 1)], res[("naive", 1)]
    pr1, bare2, pr2 = res[("postrelay", 1)], res[("bare", 2)], res[("postrelay", 2)]
    s = "ingest"
    pr_rps, bare_rps = pr1["saturation"]["rps"], bare["saturation"]["rps"]
    out = []
    r = Row(s, "saturation, postrelay, 1 worker", "req/s", pr_rps, "bare Starlette, 1 worker", bare_rps,
            "≥ 0.45x", errors=_errors(pr1["saturation"]), note=_sat_note(pr1["saturation"]))
    r.met = at_least(r.ratio, 0.45) and r.errors == 0
    out.append(r)
    r = Row(s, "saturation, postrelay, 1 worker", "req/s", pr_rps, "naive rq.enqueue, 1 worker",
            naive["saturation"]["rps"], "≥ 6x", errors=_errors(pr1["saturation"]),
            note="naive: " + _sat_note(naive["saturation"]))
    r.met = at_least(r.ratio, 6.0) and r.errors == 0
    out.append(r)
    out.append(Row(s, "saturation, bare + 1 async XADD, 1 worker (reference)", "req/s", xadd["saturation"]["rps"],
                   "bare Starlette, 1 worker", bare_rps, "", errors=_errors(xadd["saturation"]),
                   note="bare: " + _sat_note(bare["saturation"])))
    info = res[("postrelay-info", 1)]["saturation"]
    out.append(Row(s, "saturation, postrelay at INFO (the default: a JSON log line per request), 1 worker", "req/s",
                   info["rps"], "bare Starlette, 1 worker", bare_rps, "", errors=_errors(info),
                   note=_sat_note(info) + f"; the rows above run at WARNING ({pr1['saturation']['cpu_us']:.0f} µs "
                        "per request)"))
    for q in ("p50", "p99"):
        out.append(Row(s, f"saturation latency {q}, postrelay, 1 worker", "ms", pr1["saturation"]["latency_ms"][q],
                       "bare Starlette, 1 worker", bare["saturation"]["latency_ms"][q], "",
                       errors=_errors(pr1["saturation"])))
    r = Row(s, "saturation, postrelay, 2 workers", "req/s", pr2["saturation"]["rps"], "postrelay, 1 worker", pr_rps,
            "> 1x (scales)", errors=_errors(pr2["saturation"]), note=_sat_note(pr2["saturation"]))
    r.met = at_least(r.ratio, 1.0001) and r.errors == 0
    out.append(r)
    out.append(Row(s, "saturation, postrelay, 2 workers", "req/s", pr2["saturation"]["rps"],
                   "bare Starlette, 2 workers", bare2["saturation"]["rps"], "", errors=_errors(pr2["saturation"])))
    out.append(Row(s, "saturation, bare Starlette, 2 workers (machine scaling)", "req/s", bare2["saturation"]["rps"],
                   "bare Starlette, 1 worker", bare_rps, "", errors=_errors(bare2["saturation"]),
                   note=_sat_note(bare2["saturation"])))
    for rate in ctx.profile.rates:
        key = f"rate_{rate}"
        b, p, n = bare[key], pr1[key], naive[key]
        out.append(Row(s, f"@{rate:,} req/s p50, postrelay, 1 worker", "ms", p["latency_ms"]["p50"],
                       f"bare Starlette @{rate:,} p50", b["latency_ms"]["p50"], "", errors=_errors(p),
                       note=f"achieved {p['throughput']:,.0f} req/s (bare {b['throughput']:,.0f}); "
                            f"p90 {p['latency_ms']['p90']:.2f}, p99.9 {p['latency_ms']['p999']:.2f}, "
                            f"max {p['latency_ms']['max']:.2f} ms; p99 of the rounds {p['rounds_p99']} "
                            f"(bare {b['rounds_p99']}); answers {p['statuses']}, {p['timeouts']} "
                            f"timed out after the {ctx.profile.drain:g} s drain; driver CPU {p['driver_cpu_s']} s"))
        target = f"≤ {P99_TARGET_MS:g} ms, no errors" if rate == P99_TARGET_RATE else ""
        r = Row(s, f"@{rate:,} req/s p99, postrelay, 1 worker", "ms", p["latency_ms"]["p99"],
                f"bare Starlette @{rate:,} p99", b["latency_ms"]["p99"], target, errors=_errors(p))
        if target:
            r.met = r.errors == 0 and bool(at_most(r.value, P99_TARGET_MS))
        out.append(r)
        out.append(Row(s, f"@{rate:,} req/s p99, naive rq.enqueue, 1 worker (reference)", "ms",
                       n["latency_ms"].get("p99"), f"bare Starlette @{rate:,} p99", b["latency_ms"]["p99"], "",
                       errors=_errors(n),
                       note=f"achieved {n['throughput']:,.0f} req/s of {rate:,} offered; {n['timeouts']} timed out "
                            f"after the {ctx.profile.drain:g} s drain"))
    out.append(Row("memory", "peak RSS, receiver (postrelay serve, 1 worker), after the ingest runs", "MB",
                   _rss(pr1), "bare Starlette, 1 worker, same runs", _rss(bare), "",
                   note=f"postrelay 2 workers: {pr2['peak_rss_mb']} MB by pid (master first)"))
    return out


def _rss(result: dict[str, Any]) -> float | None:
    values = list(result["peak_rss_mb"].values())
    return max(values) if values else None


def run(ctx: Context) -> list[Row]:
    """Measure every target and build the rows."""
    res = measure(ctx)
    ctx.raw["ingest"] = {f"{k}-w{w}": v for (k, w), v in res.items()}
    return rows(ctx, res)
