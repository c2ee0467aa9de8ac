"""CI smoke for the benchmark: `python -m bench --smoke` runs end to end and prints a complete table.

`make bench-smoke` runs it (`pytest -m bench_smoke`), as a CI step of its own after `make test`: alone, its
saturation runs disturb no other test's timing, and the suite's wall time is not one 80 s test long.

Timed numbers never gate CI (shared, noisy machines): this only checks that every row is printed with
numeric values (or n/a with its reason where a row allows it), that no scenario failed and that no request or
delivery errored.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.profiles import SMOKE

ROOT = Path(__file__).resolve().parent.parent
NUMBER = re.compile(r"^-?[\d,]+(\.\d+)?( \S+)?$")
RATIO = re.compile(r"^-?\d+(\.\d+)?x$")  # smoke loads are tiny: a memory difference may even come out negative
TIMEOUT = 240  # the smoke run takes ~60-80 s alone; generous for shared, noisy machines
EXPECTED_SECTIONS = {"ingest", "end-to-end", "fan-out", "follow-ups", "memory", "links", "batching"}
EXPECTED_ROWS = (  # (section, start of the measurement's name, how many such rows)
    ("ingest", "saturation, postrelay, 1 worker", 2),
    ("ingest", "saturation, postrelay, 2 workers", 2),
    ("ingest", "saturation, bare + 1 async XADD", 1),
    ("ingest", "saturation, postrelay at INFO", 1),
    ("ingest", "saturation latency p", 2),
    ("ingest", "saturation, bare Starlette, 2 workers", 1),
    ("ingest", "@", 3 * len(SMOKE.rates)),  # p50 + p99 of postrelay and p99 of naive at each fixed rate
    ("end-to-end", "@", 4),
    ("fan-out", "deliveries/s, 1 postrelay worker →", 1),
    ("fan-out", "deliveries/s, 1 postrelay worker at INFO", 1),
    ("follow-ups", "", 4),  # time to schedule, memory per pending, due → fired p50 and p99
    ("memory", "peak RSS, receiver", 1),
    ("links", "/t/{token} redirects", 1),
    ("links", "/t/{token} @", 1),
    ("links", "host-quiet rounds", 1),  # n/a when bench.canary saw the host slow in every short round
    ("links", "visit → CRM", 2),
    ("memory", "peak RSS, worker", 1),
    ("memory", "Redis per mailpiece", 1),
    ("memory", "Redis per additional event", 1),
    ("memory", "mailpiece layout", 5),  # compact vs today's layout (1 and 6 events, per event), vs raw JSON, indexed
    ("batching", "HubSpot", 4),  # drain vs ideal, events per call, 429s, per event extrapolated
)

pytestmark = [pytest.mark.bench_smoke,  # `make bench-smoke` (CI runs it after `make test`)
              pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")]


def _table_rows(text: str) -> list[list[str]]:
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    assert lines and lines[0].startswith("| section |"), text[-2000:]
    return [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in lines[1:]]


def test_bench_smoke(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "bench", "--smoke", "--out", str(tmp_path)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.terminate()  # SIGTERM: the bench stops the servers, workers and Redis it started
        stdout, stderr = proc.communicate(timeout=30)
        pytest.fail(f"python -m bench --smoke took over {TIMEOUT} s: {stderr[-2000:]}")
    assert proc.returncode == 0, stderr[-3000:]
    rows = _table_rows(stdout)
    assert {r[0] for r in rows} == EXPECTED_SECTIONS
    for section, prefix, count in EXPECTED_ROWS:
        found = [r for r in rows if r[0] == section and r[1].startswith(prefix)]
        assert len(found) == count, f"{section} / {prefix!r}: {len(found)} rows, expected {count}"
    for section, name, value, _baseline, baseline_value, ratio, _target, met, errors in rows:
        if (section == "follow-ups" or name.startswith("host-quiet")) and value.startswith("n/a"):
            assert met == "n/a"
            continue
        assert NUMBER.match(value), f"{name}: value {value!r}"
        assert NUMBER.match(baseline_value), f"{name}: baseline {baseline_value!r}"
        assert RATIO.match(ratio), f"{name}: ratio {ratio!r}"
        assert errors == "0", f"{name}: errors {errors!r}"
    saved = (tmp_path / "latest.md").read_text()
    assert "Command: `python -m bench --smoke" in saved and "redis-server" in saved
    assert (tmp_path / "latest.json").exists()
