"""Tracking links: `/t/{token}` redirects against a bare Starlette 302, p99 at 2,000 visits/s, visit → CRM.

Links are minted straight into Redis (`postrelay.core.stores.links.mint_many`, the same call as the API) after each
Redis reset: `LINK_COUNT` tokens (`SMOKE_LINK_COUNT` in smoke mode), all pointing at `VISIT_TARGET`. The
request file visits them round-robin with a distinct User-Agent per line, so no visit collapses into an
earlier one, and there are far more tokens than a run visits twice: nearly every visit reads its link record
from Redis (no help from the receiver's record cache). The baseline is `bench.baselines` `redirect`: a
Starlette endpoint answering the same 302. After each postrelay round the ingest stream must hold one
`purl_opened` per answered visit.

The p99 rows also report the driver's own lateness (`driver_lag_ms` of bench.loadgen: how long after its due
time each request went out); when its p99 is near the latency p99, the driver or the machine set the tail.

Visit → CRM: a receiver, one worker and the sink run together with `bench/links.toml` (only the route the
row names: `purl_opened` → the `crm` destination; bench.toml's `*` → signed webhook route would make every
visit a second delivery, doubling the worker's CPU per visit, and put one worker at ~90% of its capacity at
200 visits/s, where latency is a queue that grows for the whole run). Links are bound to pieces
(`mailpiece` at minting) and carry a `ref`; `crm` is the HubSpot adapter against the sink's `/crm/` (which
answers like HubSpot and records when the note naming the visit's event id arrived). Latency = note arrival -
when the visit was due (open loop, same clock). The worker's CPU seconds per visit are reported.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from bench import drivers
from bench.canary import Canary
from bench.context import Context, Server
from bench.payloads import VISIT_TARGET, write_visits
from bench.procs import ROOT
from bench.report import Row, at_least, at_most
from bench.stats import summarize
from postrelay.core.linkconfig import LinksConfig
from postrelay.core.stores import links as store

LINK_COUNT, SMOKE_LINK_COUNT = 60_000, 500
RATIO_TARGET, P99_RATE, P99_TARGET_MS, CRM_RATE = 0.45, 2000, 10.0, 200
QUIET_ROUNDS, SMOKE_QUIET_ROUNDS, QUIET_WARMUP, QUIET_DURATION = 16, 2, 0.5, 1.0
STREAM = "pr:{in}:stream"
CONFIG = LinksConfig(base_url="https://go.example.com", allowed_hosts=["shop.example.com"])
TARGETS = (("redirect", 1), ("postrelay", 1))
CRM_CONFIG = ROOT / "bench" / "links.toml"


def mint(ctx: Context, count: int, bound: bool = False) -> list[str]:
    """Flush Redis and mint `count` links (bound to pieces `bench_<i>` when `bound`)."""
    ctx.redis.reset()
    specs = [store.LinkSpec(target_url=VISIT_TARGET, ref=f"contact-{i}",
                            mailpiece=store.PieceRef(source="postgrid", id=f"bench_{i}") if bound else None)
             for i in range(count)]
    tokens: list[str] = []
    for start in range(0, count, 10_000):
        tokens += [m["token"] for m in store.mint_many(ctx.redis.r, CONFIG, specs[start:start + 10_000], time.time())]
    return tokens


def _visits_file(ctx: Context, tokens: list[str], name: str, count: int) -> Any:
    path = ctx.work / name
    write_visits(path, tokens, count)
    return path


def _round(ctx: Context, servers: dict[tuple[str, int], Server], count: int, lines: int) -> dict[str, dict[str, Any]]:
    p = ctx.profile
    out = {}
    for (kind, _), srv in servers.items():
        tokens = mint(ctx, count)
        path = _visits_file(ctx, tokens, "visits.txt", lines)
        cpu = srv.proc.cpu_seconds()
        sat = drivers.saturate(srv.port, path, lines, 0, p.sat_connections, p.sat_warmup, p.sat_duration, visits=True)
        served = sat["warmup_requests"] + sat["requests"]
        sat["server_cpu_us_per_request"] = round((srv.proc.cpu_seconds() - cpu) / max(1, served) * 1e6, 1)
        if kind == "postrelay" and not sat.get("wrapped"):
            answered = served - sat["errors"]
            recorded = int(ctx.redis.r.xlen(STREAM))
            sat["recorded"], sat["answered"] = recorded, answered
            sat["unrecorded"] = max(0, answered - recorded)  # in flight at wrk's deadline: up to one per connection
            sat["unexplained"] = max(0, sat["unrecorded"] - 2 * p.sat_connections)
        out[kind] = sat
    return out


def _median(runs: list[dict[str, Any]], key: str) -> dict[str, Any]:
    ordered = sorted(runs, key=lambda r: r[key] if key != "p99" else r["latency_ms"].get("p99", float("inf")))
    chosen = dict(ordered[len(ordered) // 2])
    chosen["rounds"] = [round(r["rps"]) if key == "rps" else r["latency_ms"].get("p99") for r in runs]
    chosen["host_slow"] = [r.get("host_slow_ms") for r in runs]
    chosen["errors"] = sum(int(r.get("errors") or 0) + int(r.get("unexplained") or 0) for r in runs)
    return chosen


def _crm(ctx: Context, count: int) -> dict[str, Any]:
    """Visits at CRM_RATE through receiver + worker + HubSpot adapter; latency to the note's arrival."""
    p = ctx.profile
    tokens = mint(ctx, count, bound=True)
    n = int((p.e2e_warmup + p.e2e_duration) * CRM_RATE) + 10
    path = _visits_file(ctx, tokens[:n], "visits-crm.txt", n)
    with (ctx.sink() as sink, ctx.server("postrelay", 1, sink.url, CRM_CONFIG) as srv,
          ctx.worker(sink.url, config=CRM_CONFIG) as worker):
        direct = drivers.fixed_rate(sink.port, path, 0, CRM_RATE, p.e2e_warmup, p.e2e_duration, p.drain, visits=True)
        sink.reset()
        cpu = worker.cpu_seconds()
        run = drivers.fixed_rate(srv.port, path, 0, CRM_RATE, p.e2e_warmup, p.e2e_duration, p.drain, visits=True)
        expected = run["requests_sent"] - run["errors"]
        deadline = time.monotonic() + p.e2e_drain
        arrivals: dict[str, float] = {}
        while time.monotonic() < deadline:
            arrivals = {a[0]: a[1] for a in sink.stats()["arrivals"] if a[0].startswith("crm:")}
            if len(arrivals) >= expected:
                break
            time.sleep(0.2)
        worker_ms = (worker.cpu_seconds() - cpu) / max(1, len(arrivals)) * 1000
    # visit k is of link k, bound to piece bench_k, whose HubSpot note names it; it was due at t0 + k/rate
    latencies = [arrivals[f"crm:bench_{k}"] - (run["t0_wall"] + k / CRM_RATE)
                 for k in range(int(p.e2e_warmup * CRM_RATE), run["requests_sent"]) if f"crm:bench_{k}" in arrivals]
    return {"driver": run, "delivered": len(arrivals), "expected": expected, "latency_ms": summarize(latencies, 1000.0),
            "errors": run["errors"] + max(0, expected - len(arrivals)), "direct": direct,
            "worker_cpu_ms_per_visit": round(worker_ms, 2)}


def _short_rounds(ctx: Context, servers: dict[tuple[str, int], Server], count: int,
                  rounds: int) -> list[tuple[str, dict[str, Any], Path]]:
    """`rounds` short fixed-rate rounds per side, interleaved, each writing its latencies to a file."""
    p = ctx.profile
    per_round = int((QUIET_WARMUP + QUIET_DURATION) * P99_RATE)
    lines = max(count, rounds * per_round)
    path = _visits_file(ctx, mint(ctx, count), "visits-short.txt", lines)
    out = []
    for i in range(rounds):
        for kind, _ in TARGETS:
            latencies = ctx.work / f"short-{kind}-{i}.json"
            run = drivers.fixed_rate(servers[(kind, 1)].port, path, i * per_round % lines, P99_RATE, QUIET_WARMUP,
                                     QUIET_DURATION, p.drain, visits=True, latencies=latencies)
            out.append((kind, run, latencies))
    return out


def _slow_ms(canary: Canary, run: dict[str, Any]) -> float:
    """Milliseconds of host slow windows (bench.canary) inside the run's measured interval."""
    start, end = run["measured_wall"]
    return round(sum(min(end, w[1]) - max(start, w[0]) for w in canary.slow_in(start, end)) * 1000, 1)


def _pool_quiet(canary: Canary, runs: list[tuple[dict[str, Any], Path]]) -> dict[str, Any]:
    """The latencies of the short rounds in which the canary saw the CPU at full speed, pooled."""
    quiet = [(run, path) for run, path in runs if not canary.slow_in(*run["measured_wall"])]
    latencies = [x for _, path in quiet for x in json.loads(path.read_text())]
    return {"rounds": len(runs), "quiet_rounds": len(quiet), "latency_ms": summarize(latencies, 1000.0),
            "errors": sum(int(run.get("errors") or 0) for run, _ in quiet),
            "round_p99": [[r["latency_ms"].get("p99"), _slow_ms(canary, r)] for r, _ in runs]}


def measure(ctx: Context) -> dict[str, Any]:
    """Saturation rounds (interleaved), the fixed-rate p99 rounds, then visit → CRM."""
    p = ctx.profile
    count = SMOKE_LINK_COUNT if p.name == "smoke" else LINK_COUNT
    lines = min(p.requests, 2 * count)
    res: dict[str, Any] = {}
    with ctx.servers(list(TARGETS)) as servers:
        rounds = [_round(ctx, servers, count, lines) for _ in range(p.sat_rounds)]
        for kind, _ in TARGETS:
            res[kind] = {"saturation": _median([r[kind] for r in rounds], "rps")}
        runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind, _ in TARGETS}
        with Canary() as canary:
            for kind, _ in TARGETS:
                for _ in range(p.rate_rounds):
                    tokens = mint(ctx, count)
                    path = _visits_file(ctx, tokens, "visits-rate.txt", lines)
                    runs[kind].append(drivers.fixed_rate(servers[(kind, 1)].port, path, 0, P99_RATE, p.rate_warmup,
                                                         p.rate_duration, p.drain, visits=True))
            short = _short_rounds(ctx, servers, count, SMOKE_QUIET_ROUNDS if p.name == "smoke" else QUIET_ROUNDS)
        for kind, _ in TARGETS:
            for run in runs[kind]:
                run["host_slow_ms"] = _slow_ms(canary, run)
            res[kind]["rate"] = _median(runs[kind], "p99")
            res[kind]["quiet"] = _pool_quiet(canary, [(run, lat) for k, run, lat in short if k == kind])
        res["canary"] = {"chunk_us": canary.report.get("chunk_us"), "windows": len(canary.report["windows"])}
    res["crm"] = _crm(ctx, count)
    ctx.redis.reset()
    return res


def rows(ctx: Context, res: dict[str, Any]) -> list[Row]:
    """Table rows."""
    pr, bare = res["postrelay"]["saturation"], res["redirect"]["saturation"]
    s = "links"
    note = (f"median of rounds {pr['rounds']} (bare {bare['rounds']}) visits/s ({pr['driver']}); p50 "
            f"{pr['latency_ms']['p50']:.2f} / p99 {pr['latency_ms']['p99']:.2f} ms; server CPU "
            f"{pr['server_cpu_us_per_request']:.0f} µs per visit (bare {bare['server_cpu_us_per_request']:.0f}); "
            f"stream holds {pr.get('recorded', '?')} purl_opened of {pr.get('answered', '?')} answered")
    r = Row(s, "/t/{token} redirects, postrelay, 1 worker (each visit recorded)", "visits/s", pr["rps"],
            "bare Starlette 302, 1 worker", bare["rps"], f"≥ {RATIO_TARGET}x", errors=pr["errors"], note=note)
    r.met = bool(at_least(r.ratio, RATIO_TARGET)) and r.errors == 0
    out = [r]
    rate, bare_rate = res["postrelay"]["rate"], res["redirect"]["rate"]
    r = Row(s, f"/t/{{token}} @{P99_RATE:,} visits/s p99, postrelay, 1 worker", "ms", rate["latency_ms"].get("p99"),
            f"bare Starlette 302 @{P99_RATE:,} p99", bare_rate["latency_ms"].get("p99"), f"≤ {P99_TARGET_MS:g} ms",
            errors=rate["errors"], note=f"p99 of the rounds {rate['rounds']} (bare {bare_rate['rounds']}); p50 "
                                        f"{rate['latency_ms'].get('p50', float('nan')):.2f} ms; achieved "
                                        f"{rate['throughput']:,.0f}/s; answers {rate['statuses']}; the driver's own "
                                        f"lateness p99 {_lag(rate)} ms (bare run {_lag(bare_rate)} ms); host slow "
                                        f"windows (bench.canary) in these rounds: {rate['host_slow']} ms (bare "
                                        f"{bare_rate['host_slow']} ms)")
    r.met = bool(at_most(r.value, P99_TARGET_MS)) and r.errors == 0
    out.append(r)
    out.append(_quiet_row(res))
    crm = res["crm"]
    for q in ("p50", "p99"):
        out.append(Row(s, f"visit → CRM (HubSpot adapter) {q}, @{CRM_RATE}/s, 1 worker", "ms",
                       crm["latency_ms"].get(q), f"the same visits straight to the CRM's host {q}",
                       crm["direct"]["latency_ms"].get(q), "", errors=crm["errors"],
                       note=(f"{crm['delivered']:,} of {crm['expected']:,} visits delivered as HubSpot notes "
                             "(contact PATCH + note POST, against the sink; bench/links.toml); worker CPU "
                             f"{crm.get('worker_cpu_ms_per_visit', '?')} ms per visit") if q == "p50" else ""))
    return out


def _quiet_row(res: dict[str, Any]) -> Row:
    """p99 at P99_RATE pooled over the short rounds the canary saw at full CPU speed, both sides."""
    pr, bare = res["postrelay"]["quiet"], res["redirect"]["quiet"]
    name = f"host-quiet rounds: /t/{{token}} p99 @{P99_RATE:,} visits/s, postrelay, 1 worker"
    base = f"bare Starlette 302, its host-quiet rounds p99 @{P99_RATE:,}"
    target = f"≤ {P99_TARGET_MS:g} ms"
    if not pr["quiet_rounds"] or not bare["quiet_rounds"]:
        return Row("links", name, "ms", None, base, None, target,
                   na=f"n/a: no host-quiet round (postrelay {pr['quiet_rounds']} of {pr['rounds']}, bare "
                      f"{bare['quiet_rounds']} of {bare['rounds']})")
    r = Row("links", name, "ms", pr["latency_ms"].get("p99"), base, bare["latency_ms"].get("p99"), target,
            errors=pr["errors"],
            note=(f"{QUIET_DURATION:g} s rounds after {QUIET_WARMUP:g} s of warm-up, interleaved; pooled over the "
                  f"{pr['quiet_rounds']} of {pr['rounds']} rounds (bare {bare['quiet_rounds']} of {bare['rounds']}) "
                  f"in which bench.canary saw no host slow window ({res['canary']['windows']} windows in the "
                  f"fixed-rate phase); p50 {pr['latency_ms'].get('p50')} ms, {pr['latency_ms'].get('count')} "
                  f"visits; every round [p99 ms, host-slow ms]: {pr['round_p99']} (bare {bare['round_p99']})"))
    r.met = bool(at_most(r.value, P99_TARGET_MS)) and r.errors == 0
    return r


def _lag(run: dict[str, Any]) -> str:
    p99 = (run.get("driver_lag_ms") or {}).get("p99")
    return f"{p99:.2f}" if isinstance(p99, (int, float)) else "?"


def run(ctx: Context) -> list[Row]:
    """Measure and build the rows."""
    res = measure(ctx)
    ctx.raw["links"] = res
    return rows(ctx, res)
