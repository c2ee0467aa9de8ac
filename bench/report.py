"""Rows of the result table, machine facts, and the markdown rendering printed and saved."""

from __future__ import annotations

import math
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any


@dataclass
class Row:
    """One line of the table: a measurement, its baseline from the same run, their ratio, the target."""

    section: str
    name: str
    unit: str
    value: float | None
    baseline_name: str
    baseline: float | None
    target: str = ""
    met: bool | None = None
    errors: int | None = 0
    note: str = ""
    na: str = ""  # set when the measurement cannot be made (e.g. the feature does not exist yet)

    @property
    def ratio(self) -> float | None:
        """value / baseline."""
        if self.value is None or not self.baseline or math.isnan(self.value) or math.isnan(self.baseline):
            return None
        return self.value / self.baseline

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly."""
        return {**asdict(self), "ratio": self.ratio}


def failed_row(section: str, name: str, exc: BaseException) -> Row:
    """A row standing for a scenario that raised: it prints as an error, never as a number."""
    return Row(section, name, "", None, "", None, errors=None, note=f"ERROR {type(exc).__name__}: {exc}"[:300])


def at_least(row_ratio: float | None, bound: float) -> bool | None:
    """Target check helper."""
    return None if row_ratio is None else row_ratio >= bound


def at_most(value: float | None, bound: float) -> bool | None:
    """Target check helper."""
    return None if value is None else value <= bound


def _num(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    if 0 < abs(x) < 0.1:
        return f"{x:.4f}"
    return f"{x:.2f}"


def _ratio(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f}x"


def render_table(rows: list[Row]) -> str:
    """The markdown table (one row per measurement)."""
    lines = ["| section | measurement | value | baseline (same run) | baseline value | ratio | target | met | errors |",
             "|---|---|---:|---|---:|---:|---|---|---:|"]
    for r in rows:
        if r.na:
            lines.append(f"| {r.section} | {r.name} | {r.na} | {r.baseline_name} | — | — | {r.target} | n/a | — |")
            continue
        if r.value is None and r.note.startswith("ERROR"):
            lines.append(f"| {r.section} | {r.name} | {r.note} | {r.baseline_name} | — | — | {r.target} | ERROR | ERROR |")
            continue
        met = "" if r.met is None else ("yes" if r.met else "**no**")
        errors = "—" if r.errors is None else str(r.errors)
        lines.append(f"| {r.section} | {r.name} | {_num(r.value)} {r.unit} | {r.baseline_name} | "
                     f"{_num(r.baseline)} {r.unit} | {_ratio(r.ratio)} | {r.target} | {met} | {errors} |")
    return "\n".join(lines)


def render_notes(rows: list[Row]) -> str:
    """Per-row details (achieved rates, breakdowns) under the table."""
    out = [f"- **{r.section} / {r.name}**: {r.note}" for r in rows if r.note and not r.note.startswith("ERROR")]
    return "\n".join(out)


def _version(cmd: list[str]) -> str:
    if not shutil.which(cmd[0]):
        return "not installed"
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=5).stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "unknown"


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        text = ""
    for line in text.splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def machine_info(redis_version: str, driver: str) -> dict[str, str]:
    """Cores, CPU, OS, Python, Redis and library versions, the load generators."""
    libs = ", ".join(f"{name} {metadata.version(name)}" for name in
                     ("starlette", "uvicorn", "uvloop", "httptools", "redis", "rq", "httpx", "pydantic"))
    return {
        "cores (nproc)": str(os.cpu_count()),
        "cpu": _cpu_model(),
        "os": f"{platform.system()} {platform.release()}",
        "python": sys.version.split()[0],
        "redis-server": _version(["redis-server", "--version"]),
        "libraries": libs,
        "load generators": driver,
    }


def render_document(title: str, command: str, machine: dict[str, str], rows: list[Row], elapsed: float,
                    profile: str) -> str:
    """The whole markdown report."""
    head = [f"# {title}", "", f"Command: `{command}` (profile: {profile}, {elapsed:.0f} s)", ""]
    head += [f"- {k}: {v}" for k, v in machine.items()]
    body = ["", render_table(rows), "", "Details:", "", render_notes(rows), ""]
    return "\n".join(head + body)
