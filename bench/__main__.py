"""`python -m bench [--smoke]`: start Redis and the services on loopback, drive load, print the table.

Every row compares a measurement with a baseline measured in the same run on the same machine. The table
goes to stdout and to bench/out/latest.md (raw numbers in bench/out/latest.json). `--smoke` runs the same
rows with tiny loads in well under a minute (CI runs it so the benchmark cannot rot; its numbers mean
nothing). Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from bench import drivers
from bench.context import Context
from bench.payloads import write_requests
from bench.procs import ROOT, BenchRedis
from bench.profiles import FULL, SMOKE
from bench.report import Row, failed_row, machine_info, render_document, render_table
from bench.scenarios import batching, e2e, fanout, followups, ingest, links, memory

OUT = ROOT / "bench" / "out"
SCENARIOS: dict[str, Callable[[Context], list[Row]]] = {
    "ingest": ingest.run, "e2e": e2e.run, "fanout": fanout.run, "followups": followups.run, "links": links.run,
    "memory": memory.run, "batching": batching.run,
}


def _log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run(smoke: bool, only: list[str], keep: bool) -> tuple[list[Row], dict[str, object], float]:
    """Run the selected scenarios; a scenario that raises becomes an ERROR row (the others still run)."""
    profile = SMOKE if smoke else FULL
    started = time.monotonic()
    load_start = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="postrelay-bench-"))
    redis = BenchRedis().start()
    rows: list[Row] = []
    try:
        _log(f"profile {profile.name}; work dir {work}; generating {profile.requests:,} signed requests")
        ingest_set = write_requests(work / "ingest.txt", profile.requests, "i")
        ctx = Context(profile, work, redis, ingest_set)
        ctx.raw["request_body_bytes"] = ingest_set.mean_body_bytes
        for name, scenario in SCENARIOS.items():
            if only and name not in only:
                continue
            _log(f"scenario {name}")
            try:
                rows.extend(scenario(ctx))
            except Exception as exc:
                traceback.print_exc()
                rows.append(failed_row(name, f"scenario {name}", exc))
        ctx.raw["redis_version"] = redis.version()
        ctx.raw["loadavg"] = {"start": load_start, "end": os.getloadavg()}
        return rows, ctx.raw, time.monotonic() - started
    finally:
        redis.stop()
        if keep:
            _log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds the context managers, which stop every child process


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run, print and save the table; exit 1 if a scenario failed."""
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny loads, same rows (CI)")
    p.add_argument("--only", action="append", choices=sorted(SCENARIOS), default=[],
                   help="run only this scenario (repeatable)")
    p.add_argument("--keep", action="store_true", help="keep the work directory (request files, child logs)")
    p.add_argument("--out", type=Path, default=OUT, help="directory for latest.md / latest.json")
    args = p.parse_args(argv)
    command = "python -m bench" + (" " + shlex.join(argv if argv is not None else sys.argv[1:])).rstrip()
    rows, raw, elapsed = run(args.smoke, args.only, args.keep)
    driver = ("wrk 4.1 (1 thread, saturation) + bench.loadgen (open loop, fixed rates)" if drivers.wrk_available()
              else "bench.loadgen (closed loop at saturation, open loop at fixed rates; wrk not installed)")
    machine = machine_info(str(raw.get("redis_version", "?")), driver)
    machine["postrelay processes"] = ("POSTRELAY_LOG_LEVEL=WARNING (the default, INFO, writes one JSON line per request "
                                      "and per delivery; the \"at INFO\" rows measure it), bench/bench.toml")
    load = raw.get("loadavg")
    if isinstance(load, dict):
        machine["load average (1/5/15 min)"] = (f"start {' / '.join(f'{x:.2f}' for x in load['start'])}, "
                                                f"end {' / '.join(f'{x:.2f}' for x in load['end'])} "
                                                "(the machine is shared: other tenants' work shows here)")
    doc = render_document("postrelay benchmark", command, machine, rows, elapsed, "smoke" if args.smoke else "full")
    print(render_table(rows))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latest.md").write_text(doc, encoding="utf-8")
    (args.out / "latest.json").write_text(json.dumps({"command": command, "machine": machine, "elapsed_s": elapsed,
                                                      "rows": [r.as_dict() for r in rows], "raw": raw},
                                                     indent=1, default=str), encoding="utf-8")
    _log(f"done in {elapsed:.0f} s; wrote {args.out / 'latest.md'}")
    return 1 if any(r.note.startswith("ERROR") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
