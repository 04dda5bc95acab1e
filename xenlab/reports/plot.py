"""A board page's plot: each boot stage's time from power-on over the nights, as SVG paths."""

from __future__ import annotations

import math


PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")


def plot(cells: list[dict], width: int = 760, height: int = 260) -> dict | None:
    """SVG paths of each stage's time from power-on over the nights.

    Runs recorded without stage marks are plotted by step durations instead.
    """
    use_marks = any(c["marks"] for c in cells)
    series: dict[str, list[tuple[int, float]]] = {}
    for i, c in enumerate(cells):
        values = c["marks"] if use_marks else {s[0]: s[2] for s in c["steps"] if s[2] is not None}
        for name, secs in values.items():
            # A valid record may say Infinity, NaN or a negative time: no point, no crash.
            if isinstance(secs, (int, float)) and not isinstance(secs, bool) \
                    and math.isfinite(secs) and 0 <= secs < 1e9:
                series.setdefault(name, []).append((i, float(secs)))
    if not series:
        return None
    left, right, top, bottom = 48, 150, 12, 28
    tick, top_value = _nice_axis(max(v for points in series.values() for _, v in points))
    span = max(1, len(cells) - 1)

    def x(i):
        return round(left + (width - left - right) * i / span, 1)

    def y(v):
        return round(top + (height - top - bottom) * (1 - v / top_value), 1)

    lines = []
    for n, (name, points) in enumerate(series.items()):
        d, last = [], None
        for i, v in points:
            d.append(f"{'L' if last is not None and i == last + 1 else 'M'}{x(i)},{y(v)}")
            last = i
        lines.append({"name": name, "d": " ".join(d), "colour": PALETTE[n % len(PALETTE)],
                      "legend_y": top + 14 * n + 8, "dots": [(x(i), y(v)) for i, v in points]
                      if len(points) <= 31 else []})
    ticks = [{"y": y(tick * k), "label": f"{tick * k:g}"}
             for k in range(round(top_value / tick) + 1)]
    labels = [{"x": x(i), "text": cells[i]["night"]} for i in sorted({0, len(cells) // 2,
                                                                       len(cells) - 1})]
    return {"width": width, "height": height, "lines": lines, "ticks": ticks, "labels": labels,
            "left": left, "right": width - right, "bottom": height - bottom, "top": top,
            "legend_x": width - right + 10,
            "what": "seconds from power-on to each stage" if use_marks else "seconds per step"}


def _nice_axis(highest: float) -> tuple[float, float]:
    """(tick, top): a 1-2-2.5-5 tick giving at most five steps up to a top above `highest`."""
    raw = max(highest, 1e-3) / 5
    magnitude = 10 ** math.floor(math.log10(raw))
    tick = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if raw <= m * magnitude)
    return tick, tick * math.ceil(highest / tick + 1e-9)
