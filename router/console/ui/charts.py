"""Small SVG charts drawn on the server: a line chart and a bar chart over (time, value)
points, with a y axis from zero in steps of 1, 2 or 5 (times a power of ten) and UTC
times under the x axis.

No style attributes and no script (the console's Content-Security-Policy allows neither):
the look comes from the classes, which console.css styles. Every label is escaped."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime

from markupsafe import Markup, escape

Point = tuple[float, float]  # (unix time, value)
Series = tuple[str, Sequence[Point]]  # (label, points)

WIDTH, HEIGHT = 480, 170
LEFT, RIGHT, TOP, BOTTOM = 48, 10, 22, 22


def scale(maximum: float) -> tuple[float, float]:
    """(top, step) of a y axis from 0 that holds `maximum`: a step of 1, 2 or 5 times a
    power of ten, two to five steps high (1, 0.25... for 0)."""
    if maximum <= 0 or not math.isfinite(maximum):
        return 1.0, 0.25
    rough = maximum / 4
    power = 10 ** math.floor(math.log10(rough))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= rough * (1 - 1e-9))
    return step * math.ceil(maximum / step - 1e-9), step


def format_value(value: float, unit: str = "") -> str:
    """1234 -> 1.2k, 0.25 -> 0.25, 0.5 -> 0.5, with the unit appended (%, ms, /s...)."""
    magnitude = abs(value)
    if magnitude >= 1_000_000:
        text = f"{value / 1_000_000:.1f}".removesuffix(".0") + "M"
    elif magnitude >= 1000:
        text = f"{value / 1000:.1f}".removesuffix(".0") + "k"
    elif magnitude >= 100 or value == int(value):
        text = f"{value:.0f}"
    else:
        text = f"{value:.1f}" if magnitude >= 10 else f"{value:.2f}"
        text = text.rstrip("0").rstrip(".")
    return text + unit


def _clock(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%H:%M")


def _frame(title: str, empty: bool) -> list[str]:
    label = escape(title)
    parts = [
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'role="img" aria-label="{label}">',
        f"<title>{label}</title>",
        f'<text class="chart-title" x="{LEFT}" y="14">{label}</text>',
    ]
    if empty:
        middle = (TOP + HEIGHT - BOTTOM) / 2
        parts.append(
            f'<text class="chart-empty" x="{WIDTH / 2:.0f}" y="{middle:.0f}" '
            f'text-anchor="middle">no data</text>'
        )
    return parts


def _axes(
    start: float, end: float, top: float, step: float, unit: str
) -> tuple[list[str], float, float, float, float]:
    """Grid lines, y labels and x labels; the plot area's x0, x1, y0 (bottom) and y1."""
    x0, x1 = LEFT, WIDTH - RIGHT
    y0, y1 = HEIGHT - BOTTOM, TOP
    parts = []
    for i in range(round(top / step) + 1):
        value = step * i
        y = y0 - (y0 - y1) * value / top
        parts.append(f'<line class="chart-grid" x1="{x0}" x2="{x1}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(
            f'<text class="chart-label" x="{x0 - 4}" y="{y + 4:.1f}" text-anchor="end">'
            f"{escape(format_value(value, unit))}</text>"
        )
    ticks = ((start, "start", x0), ((start + end) / 2, "middle", (x0 + x1) / 2), (end, "end", x1))
    for moment, anchor, where in ticks:
        parts.append(
            f'<text class="chart-label" x="{where:.1f}" y="{HEIGHT - 6}" '
            f'text-anchor="{anchor}">{escape(_clock(moment))}</text>'
        )
    return parts, x0, x1, y0, y1


def _bounds(series: Sequence[Series], span: tuple[float, float] | None) -> tuple[float, float]:
    times = [t for _, points in series for t, _ in points]
    start, end = span if span is not None else (min(times), max(times))
    if end <= start:
        end = start + 60
    return start, end


def line_chart(
    points: Sequence[Point],
    *,
    title: str,
    unit: str = "",
    label: str | None = None,
    more: Sequence[Series] = (),
    span: tuple[float, float] | None = None,
) -> Markup:
    """A line (plus one per `more` series, each with its label in a legend) over `span`
    (start, end), by default the points' own."""
    series: list[Series] = [(label or title, points), *more]
    if not any(points for _, points in series):
        return Markup("".join([*_frame(title, True), "</svg>"]))
    start, end = _bounds(series, span)
    top, step = scale(max(v for _, points in series for _, v in points))
    parts = _frame(title, False)
    axes, x0, x1, y0, y1 = _axes(start, end, top, step, unit)
    parts += axes
    for index, (name, data) in enumerate(series):
        coordinates = [
            (x0 + (x1 - x0) * (t - start) / (end - start), y0 - (y0 - y1) * v / top)
            for t, v in sorted(data)
        ]
        if len(coordinates) == 1:
            x, y = coordinates[0]
            parts.append(
                f'<circle class="chart-dot series-{index}" cx="{x:.1f}" cy="{y:.1f}" r="2.5"/>'
            )
        elif coordinates:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coordinates)
            parts.append(f'<polyline class="chart-line series-{index}" points="{path}"/>')
        if more:  # a legend only when there is more than one line
            x = WIDTH - RIGHT - 90 * (len(series) - index)
            parts.append(
                f'<text class="chart-legend series-{index}" x="{x}" y="14">{escape(name)}</text>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))


def bar_chart(
    points: Sequence[Point],
    *,
    title: str,
    unit: str = "",
    step: float = 60.0,
    span: tuple[float, float] | None = None,
) -> Markup:
    """One bar per point, each `step` seconds wide, over `span` (by default the points')."""
    if not points:
        return Markup("".join([*_frame(title, True), "</svg>"]))
    first, last = _bounds([(title, points)], span)
    start, end = first, last + step  # the last bar's interval ends the x axis
    top, tick = scale(max(v for _, v in points))
    parts = _frame(title, False)
    axes, x0, x1, y0, y1 = _axes(start, end, top, tick, unit)
    parts += axes
    width = max(1.0, (x1 - x0) * step / (end - start) - 1)
    for moment, value in sorted(points):
        if not first <= moment <= last:
            continue
        x = x0 + (x1 - x0) * (moment - start) / (end - start)
        height = (y0 - y1) * value / top
        parts.append(
            f'<rect class="chart-bar" x="{x + 0.5:.1f}" y="{y0 - height:.1f}" '
            f'width="{width:.1f}" height="{height:.1f}">'
            f"<title>{escape(_clock(moment))}: {escape(format_value(value, unit))}</title></rect>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))
