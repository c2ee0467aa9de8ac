"""A CPU-speed canary: tells when the machine itself ran slow, so a latency round can be judged by it.

`python -m bench.canary` (started by `Canary`) runs a fixed piece of pure computation every 2 ms and reads
how much *thread CPU time* it took. Being descheduled by the guest's own scheduler does not add CPU time;
a host that stops the virtual CPUs behind the guest's back does (the guest counts the gap as the thread
running, and reports no steal). On the 2-vCPU Firecracker machines this bench was written on, an idle machine
showed both vCPUs running the chunk 15-28x slower at once for 20-90 ms, about once every 2 s: a server cannot
answer in 10 ms while its CPU runs at a twentieth of its speed.

A *slow window* is a run of chunks whose CPU time was at least `SLOW_FACTOR` times the calibrated one,
chunks closer than `MERGE_GAP_S` merged, spanning at least `MIN_WINDOW_S`. Costs ~4% of one core. The
child prints `ready` once calibrated (`Canary` waits for it), and when stdin closes (the parent is done)
one JSON object: the calibrated chunk (µs), the number of chunks and the windows as
`[start, end, worst factor]` in epoch seconds.
"""

from __future__ import annotations

import json
import select
import subprocess
import sys
import time
from types import TracebackType
from typing import Any

from bench.procs import ROOT, python

INTERVAL_S = 0.002
SLOW_FACTOR = 3.0
MERGE_GAP_S = 0.010
MIN_WINDOW_S = 0.002  # one interrupt inflates a single chunk by tens of µs; a slow machine spans many chunks
CHUNK_LOOPS = 1500


def _chunk() -> int:
    total = 0
    for i in range(CHUNK_LOOPS):
        total += i * i
    return total


def _cpu_of_chunk() -> float:
    start = time.thread_time()
    _chunk()
    return time.thread_time() - start


def calibrate(samples: int = 200) -> float:
    """The median CPU seconds of one chunk."""
    runs = sorted(_cpu_of_chunk() for _ in range(samples))
    return runs[len(runs) // 2]


def windows(chunks: list[tuple[float, float]], base: float) -> list[list[float]]:
    """Merge slow chunks (`(epoch start, cpu seconds)`) into `[start, end, worst factor]` windows."""
    out: list[list[float]] = []
    for start, cpu in chunks:
        factor = cpu / base
        if factor < SLOW_FACTOR:
            continue
        end = start + cpu
        if out and start - out[-1][1] <= MERGE_GAP_S:
            out[-1][1], out[-1][2] = max(out[-1][1], end), max(out[-1][2], factor)
        else:
            out.append([start, end, factor])
    return [[round(a, 4), round(b, 4), round(f, 1)] for a, b, f in out if b - a >= MIN_WINDOW_S]


def main() -> None:
    """Run chunks until stdin closes, then print the JSON report."""
    base = calibrate()
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    chunks: list[tuple[float, float]] = []
    while not select.select([sys.stdin], [], [], INTERVAL_S)[0]:
        chunks.append((time.time(), _cpu_of_chunk()))
    report = {"chunk_us": round(base * 1e6, 1), "chunks": len(chunks), "windows": windows(chunks, base)}
    json.dump(report, sys.stdout)
    sys.stdout.write("\n")


class Canary:
    """`with Canary() as c: ...` then `c.report` (see the module docstring) and `c.slow_in(start, end)`."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[str] | None = None
        self.report: dict[str, Any] = {"windows": []}

    def __enter__(self) -> Canary:
        self.proc = subprocess.Popen(python("-m", "bench.canary"), cwd=ROOT, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        if self.proc.stdout.readline() != "ready\n":  # calibrated and sampling from here on
            raise RuntimeError("bench.canary did not start")
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        assert self.proc is not None
        out, _ = self.proc.communicate(input="", timeout=30)
        if self.proc.returncode == 0 and out.strip():
            self.report = json.loads(out.strip().splitlines()[-1])

    def slow_in(self, start: float, end: float) -> list[list[float]]:
        """The slow windows that overlap the epoch interval [start, end]."""
        return [w for w in self.report["windows"] if w[1] >= start and w[0] <= end]


if __name__ == "__main__":
    main()
