"""Charts as plain numbers for the templates to draw as inline SVG (no script, no library).

Each function returns a dict of coordinates and labels; `templates/_charts.html` turns it into `<svg>` with
presentation attributes only (a strict Content-Security-Policy forbids inline styles and scripts).
"""

from __future__ import annotations

import math
from typing import Any

PALETTE = ["#2563eb", "#db2777", "#059669", "#d97706", "#7c3aed", "#dc2626", "#0891b2", "#4b5563"]


def _nice_max(value: float) -> float:
    """A round axis maximum at or above `value` (1, 2, 5 x 10^n)."""
    if value <= 0:
        return 1.0
    exp = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * exp:
            return float(step * exp)
    return float(10 * exp)  # pragma: no cover


def lines(labels: list[str], series: dict[str, list[float]], width: int = 720, height: int = 220,
          every: int = 1, scale: float = 1.0) -> dict[str, Any]:
    """A line per series over shared x labels; `every`: label each n-th x tick; `scale`: values per legend unit
    (the legend shows each series' total times `scale`)."""
    left, right, top, bottom = 48, 12, 12, 28
    plot_w, plot_h = width - left - right, height - top - bottom
    top_value = _nice_max(max((v for vs in series.values() for v in vs), default=0))
    n = max(1, len(labels) - 1)

    def x(i: int) -> float:
        return round(left + plot_w * i / n, 1)

    def y(v: float) -> float:
        return round(top + plot_h * (1 - v / top_value), 1)

    out = []
    for i, (name, values) in enumerate(series.items()):
        points = " ".join(f"{x(j)},{y(v)}" for j, v in enumerate(values))
        out.append({"name": name, "points": points, "color": PALETTE[i % len(PALETTE)], "total": sum(values),
                    "scale": scale})
    yticks = [{"y": y(top_value * f), "label": f"{top_value * f:.3g}"} for f in (0, 0.5, 1)]
    xticks = [{"x": x(i), "label": label} for i, label in enumerate(labels) if i % max(1, every) == 0]
    return {"width": width, "height": height, "series": out, "xticks": xticks, "yticks": yticks,
            "left": left, "bottom": height - bottom, "right": width - right, "top": top}


def bars(rows: list[tuple[str, int]], width: int = 720, bar: int = 22) -> dict[str, Any]:
    """Horizontal bars (a funnel): label, value and share of the first row."""
    label_w, value_w = 190, 120
    plot_w = width - label_w - value_w
    first = rows[0][1] if rows and rows[0][1] else max((v for _, v in rows), default=0) or 1
    top_value = max([first, *(v for _, v in rows)]) or 1
    out = []
    for i, (label, value) in enumerate(rows):
        share = value / first if first else 0.0
        out.append({"label": label, "value": value, "share": f"{share:.0%}", "y": i * (bar + 8),
                    "w": round(plot_w * value / top_value, 1), "color": PALETTE[0]})
    return {"width": width, "height": len(rows) * (bar + 8), "bar": bar, "label_w": label_w,
            "value_x": label_w + plot_w + 8, "rows": out}
