"""Running the load generators as separate processes: wrk (saturation) and bench.loadgen (fixed rates).

At saturation wrk (C, one thread, `--latency`) replays the pre-signed requests through bench/wrk/replay.lua;
when wrk is not installed the Python driver runs closed loop instead. Fixed offered loads always use the
Python open-loop driver (wrk2 is not available). Each call returns a plain dict.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from bench.payloads import WEBHOOK_PATH
from bench.procs import ROOT, python

LUA = ROOT / "bench" / "wrk" / "replay.lua"
VISITS_LUA = ROOT / "bench" / "wrk" / "visits.lua"


def wrk_available() -> bool:
    """True when `wrk` is on PATH."""
    return shutil.which("wrk") is not None


def _wrk(port: int, file: Path, offset: int, count: int, connections: int, seconds: float,
         path: str = WEBHOOK_PATH, visits: bool = False) -> dict[str, Any]:
    script = VISITS_LUA if visits else LUA
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "10s", "-s", str(script),
            f"http://127.0.0.1:{port}", "--", str(file), str(offset), str(count), path]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    for line in proc.stdout.splitlines():
        if line.startswith("BENCHJSON "):
            data = json.loads(line[len("BENCHJSON "):])
            data["wrapped"] = data["requests"] > count
            return data
    raise RuntimeError(f"wrk printed no result (rc {proc.returncode}): {proc.stdout[-500:]} {proc.stderr[-500:]}")


def saturate(port: int, file: Path, total_lines: int, offset: int, connections: int, warmup: float,
             duration: float, visits: bool = False) -> dict[str, Any]:
    """Closed-loop maximum throughput after a warm-up; returns rps, latency (ms), errors, lines used.

    `visits`: the file holds link visits (bench.payloads.write_visits), sent as GETs; a 302 is the answer."""
    if not wrk_available():
        return _saturate_python(port, file, total_lines, offset, connections, warmup, duration, visits)
    warm = (_wrk(port, file, offset, total_lines - offset, connections, warmup, visits=visits) if warmup > 0
            else {"requests": 0})
    start = (offset + warm["requests"]) % total_lines
    run = _wrk(port, file, start, total_lines - start, connections, duration, visits=visits)
    seconds = run["duration_us"] / 1e6
    lat = run["latency_us"]
    errors = sum(run["errors"].values())
    return {"driver": "wrk", "rps": run["requests"] / seconds, "requests": run["requests"],
            "warmup_requests": warm["requests"], "errors": errors, "error_detail": run["errors"],
            "latency_ms": {k: v / 1000 for k, v in lat.items()},
            "wrapped": offset + warm["requests"] + run["requests"] > total_lines,
            "next_offset": start + run["requests"]}


def _saturate_python(port: int, file: Path, total_lines: int, offset: int, connections: int, warmup: float,
                     duration: float, visits: bool = False) -> dict[str, Any]:
    out = loadgen(port, file, offset, ["--concurrency", str(connections), "--warmup", str(warmup),
                                       "--duration", str(duration), "--count", str(total_lines - offset),
                                       *(["--visits"] if visits else [])])
    return {"driver": "bench.loadgen (closed loop)", "rps": out["throughput"], "requests": out["ok"],
            "warmup_requests": out["requests_sent"] - out["ok"], "errors": out["errors"], "error_detail": out,
            "latency_ms": out["latency_ms"], "wrapped": out["requests_sent"] > out["loaded_requests"],
            "next_offset": offset + out["requests_sent"]}


def fixed_rate(port: int, file: Path, offset: int, rate: float, warmup: float, duration: float, drain: float,
               path: str = WEBHOOK_PATH, visits: bool = False, latencies: Path | None = None) -> dict[str, Any]:
    """Open-loop run at `rate` req/s; see bench.loadgen (`visits`: GET link visits, see `saturate`;
    `latencies`: a file to receive every measured latency)."""
    out = loadgen(port, file, offset, ["--rate", str(rate), "--warmup", str(warmup), "--duration", str(duration),
                                       "--drain", str(drain), "--path", path, *(["--visits"] if visits else []),
                                       *(["--latencies", str(latencies)] if latencies else [])])
    out["next_offset"] = offset + out["requests_sent"]
    return out


def loadgen(port: int, file: Path, offset: int, extra: list[str]) -> dict[str, Any]:
    """Run `python -m bench.loadgen` and parse its JSON."""
    argv = python("-m", "bench.loadgen", "--port", str(port), "--file", str(file), "--offset", str(offset), *extra)
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"bench.loadgen failed (rc {proc.returncode}): {proc.stderr[-800:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
