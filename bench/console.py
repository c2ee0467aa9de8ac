"""`python -m bench.console`: the console's page and API server times, and the Redis memory its indexes add.

Loads the demo data set (`postrelay.core.demo`) at scale (default 100,000 mailpieces in 100 campaigns) into a fresh
Redis, starts `postrelay serve` with INFO request logs, requests every page and API endpoint with varied
parameters (one request at a time), and reads each request's server time from its log line (`duration_ms`,
measured by the receiver's edge from the first byte in to the last byte out). Memory: Redis `used_memory` with
the indexes, minus `used_memory` after dropping every index key and index field; then `postrelay reindex`
rebuilds them (timed). Prints a Markdown table (also written to bench/out/console.md).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench.procs import ROOT, BenchRedis
from postrelay.core import demo, keys
from postrelay.core.config import load_runtime_config, parse_config
from postrelay.core.stores.indexes import STATE_FIELDS
from postrelay.core.stores.reindex import reindex
from tests.support.processes import ReceiverProcess, wait_for, write_config

TOKEN = "bench-console-operate-token-0123"
TARGET_MS = 100.0


def _log(msg: str) -> None:
    print(f"[bench.console {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def index_bytes(r: Any) -> int:
    """used_memory minus used_memory without any index key or piece index field (then restored by the caller)."""
    with_index = int(r.info("memory")["used_memory"])
    for raw in list(r.scan_iter(match=keys.INDEX_PREFIX + ":*", count=5000)):
        r.unlink(raw)
    pipe = r.pipeline(transaction=False)
    for n, raw in enumerate(r.scan_iter(match="pr:piece:{*}", count=5000, _type="hash")):
        if raw.endswith(b"}"):
            pipe.hdel(raw, *STATE_FIELDS)
        if n % 5000 == 4999:
            pipe.execute()
    pipe.execute()
    time.sleep(1.0)  # lazy frees (UNLINK) settle
    return with_index - int(r.info("memory")["used_memory"])


def _targets(r: Any, rng: random.Random, n: int) -> tuple[list[tuple[str, str]], list[str]]:
    """(label, path) of `n` requests per page and endpoint (shuffled), with parameters drawn from the data; and
    the labels in order."""
    members = [m.decode() for m in r.zrandmember(keys.INDEX_ALL, 500)]
    campaigns = [c.decode() for c in r.zrange(keys.INDEX_CAMPAIGNS, 0, -1)]
    emails = [e.decode() for e in (r.hget(keys.piece(*m.split(":", 1)), "email") for m in members[:200]) if e]
    words = [w.decode().split()[-1] for w in (r.hget(keys.piece(*m.split(":", 1)), "ix_t") for m in members[:200]) if w]
    stages = ["mailed", "in_transit", "processed_for_delivery", "delivered", "returned_to_sender"]
    pick = rng.choice
    kinds: dict[str, Any] = {
        "page overview": lambda: "/ui/",
        "page mailpieces (newest)": lambda: "/ui/mailpieces",
        "page mailpieces ?email=": lambda: f"/ui/mailpieces?email={pick(emails)}",
        "page mailpieces ?q=name": lambda: f"/ui/mailpieces?q={pick(words)}",
        "page mailpieces ?campaign=&stage=": lambda: f"/ui/mailpieces?campaign={pick(campaigns)}&stage={pick(stages)}",
        "page mailpiece": lambda: "/ui/mailpieces/" + "/".join(pick(members).split(":", 1)),
        "page campaigns": lambda: "/ui/campaigns",
        "page campaign (funnel)": lambda: f"/ui/campaigns/{pick(campaigns)}",
        "page deliveries": lambda: "/ui/deliveries",
        "page follow-ups": lambda: "/ui/followups",
        "api GET /v1/mailpieces ?email=": lambda: f"/v1/mailpieces?email={pick(emails)}",
        "api GET /v1/mailpieces ?campaign=&stage=": lambda: f"/v1/mailpieces?campaign={pick(campaigns)}&stage={pick(stages)}",
        "api GET /v1/mailpieces/{source}/{id}": lambda: "/v1/mailpieces/" + "/".join(pick(members).split(":", 1)),
        "api GET /v1/campaigns": lambda: "/v1/campaigns",
        "api GET /v1/campaigns/{id}": lambda: f"/v1/campaigns/{pick(campaigns)}",
        "api GET /v1/campaigns/{id}/mailpieces.csv": lambda: f"/v1/campaigns/{pick(campaigns)}/mailpieces.csv",
        "api GET /v1/dlq": lambda: "/v1/dlq",
        "api GET /v1/deliveries?status=dead": lambda: "/v1/deliveries?status=dead",
        "api GET /v1/followups": lambda: "/v1/followups",
    }
    out = [(label, make()) for label, make in kinds.items() for _ in range(n)]
    rng.shuffle(out)
    return out, list(kinds)


def _session(url: str) -> httpx.Client:
    client = httpx.Client(base_url=url, timeout=60)
    form = client.get("/ui/signin")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)  # type: ignore[union-attr]
    client.post("/ui/signin", data={"csrf": csrf, "token": TOKEN})
    return client


def _server_times(log_path: Path) -> list[tuple[str, float, int]]:
    """(path, duration_ms, status) of every request log line."""
    out = []
    for line in log_path.read_text(errors="replace").splitlines():
        if '"msg": "request"' not in line:
            continue
        rec = json.loads(line)
        out.append((rec["path"], float(rec["duration_ms"]), int(rec["status"])))
    return out


def run(pieces: int, campaigns: int, per_kind: int) -> str:
    work = Path(tempfile.mkdtemp(prefix="postrelay-bench-console-"))
    redis = BenchRedis().start()
    proc = None
    try:
        config = load_runtime_config(str(ROOT / "examples" / "demo.toml"))
        data = config.model_dump(mode="json", exclude_none=True)
        data["server"].update(redis_url=redis.url, tokens=[{"name": "bench", "token": TOKEN, "role": "operate"}])
        config = parse_config(data)
        _log(f"loading {pieces:,} pieces in {campaigns} campaigns")
        started = time.monotonic()
        counts = demo.load(redis.r, redis.r, config, demo.Plan(pieces=pieces, campaigns=campaigns),
                           now=datetime.now(UTC))
        load_s = time.monotonic() - started
        _log(f"loaded {counts} in {load_s:.0f} s; measuring index memory")
        per_piece = index_bytes(redis.r) / pieces
        started = time.monotonic()
        reindex(redis.r, redis.r, config.server.timeline_retention)
        reindex_s = time.monotonic() - started
        _log(f"indexes: {per_piece:.0f} B per piece; reindex {reindex_s:.0f} s")
        log_path = work / "serve.log"
        proc = ReceiverProcess(write_config(work / "config.toml", data), log_path,
                               env={"POSTRELAY_LOG_LEVEL": "INFO"}).start()
        ui, api = _session(proc.url), httpx.Client(base_url=proc.url, timeout=60,
                                                   headers={"Authorization": f"Bearer {TOKEN}"})
        targets, labels = _targets(redis.r, random.Random(5), per_kind)
        for label, path in targets[:20]:  # warm-up (connections, template compilation)
            (ui if label.startswith("page") else api).get(path)
        before = len(_server_times(log_path))
        wanted: list[tuple[str, str]] = []
        for label, path in targets:
            resp = (ui if label.startswith("page") else api).get(path)
            assert resp.status_code == 200, (path, resp.status_code, resp.text[:300])
            wanted.append((label, path))
        assert wait_for(lambda: len(_server_times(log_path)) >= before + len(wanted), 10)
        times = _server_times(log_path)[before:before + len(wanted)]
        by_label: dict[str, list[float]] = {label: [] for label in labels}  # pages, then the API
        for (label, path), (logged, ms, _status) in zip(wanted, times, strict=True):
            assert logged.split("?")[0] == path.split("?")[0], (logged, path)
            by_label.setdefault(label, []).append(ms)
        rows = [f"| console | {label} | {statistics.median(v):.1f} ms | {_pct(v, 0.95):.1f} ms | ≤ {TARGET_MS:.0f} ms "
                f"(p95) | {'yes' if _pct(v, 0.95) <= TARGET_MS else 'NO'} |" for label, v in by_label.items()]
        head = ("| section | request (server time, one at a time) | p50 | p95 | target | met |\n"
                "|---|---|---:|---:|---|---|")
        memory = (f"| console | Redis memory the indexes add per mailpiece (≈{counts['events'] / pieces:.1f} events "
                  f"each) | {per_piece:,.0f} B |  |  |  |\n"
                  f"| console | `postrelay reindex` of {pieces:,} pieces ({counts['events']:,} events) | "
                  f"{reindex_s:.0f} s |  |  |  |")
        return (f"{pieces:,} mailpieces in {campaigns} campaigns ({counts['events']:,} events, "
                f"{counts['dead_letters']} dead letters), {per_kind} requests per row; data loaded in {load_s:.0f} s\n\n"
                + head + "\n" + "\n".join(rows) + "\n" + memory + "\n")
    finally:
        if proc is not None:
            proc.terminate()
        redis.server.cleanup() if hasattr(redis.server, "cleanup") else None


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench.console", description=__doc__.splitlines()[0])
    p.add_argument("--pieces", type=int, default=100_000)
    p.add_argument("--campaigns", type=int, default=100)
    p.add_argument("--requests", type=int, default=60, help="requests per page / endpoint (default 60)")
    args = p.parse_args()
    table = run(args.pieces, args.campaigns, args.requests)
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "console.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("POSTRELAY_LOG_LEVEL", "WARNING")
    sys.exit(main())
