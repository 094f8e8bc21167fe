"""A replay's days as one SVG chart: awarded and delivered kWh per day, each day's shortfall
split by cause, and the share of its intervals delivered in full. SVG opens in any browser and
needs no plotting library (the service has none to spare)."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any

WIDTH, HEIGHT = 960, 420
LEFT, RIGHT, TOP, BOTTOM = 64, 64, 48, 72
COLOURS = {  # one per shortfall cause, in the ledger's order
    "not_dispatched": "#9e9e9e",
    "refusal": "#8e24aa",
    "left_early": "#f4511e",
    "arrived_late": "#fb8c00",
    "dropout": "#6d4c41",
    "soc_below_forecast": "#e53935",
    "response": "#fdd835",
}
DELIVERED = "#43a047"
IN_FULL = "#1e88e5"


def _nice_top(x: float) -> float:
    """A round axis top at or above `x`."""
    if x <= 0:
        return 1.0
    step = 10.0 ** len(str(int(x))) / 10.0
    for k in (1.0, 2.0, 2.5, 5.0, 10.0):
        if k * step >= x:
            return k * step
    return 10.0 * step


def svg(report: dict[str, Any], title: str) -> str:
    """The chart of `report` (what `runner.run` returns) as an SVG document."""
    days: Sequence[dict[str, Any]] = report["days"]
    n = max(len(days), 1)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    top = _nice_top(max((float(d["awarded_kwh"]) for d in days), default=0.0))
    slot = plot_w / n
    bar = max(slot * 0.8, 0.5)

    def y(kwh: float) -> float:
        return TOP + plot_h * (1.0 - max(kwh, 0.0) / top)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="11">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        f'<text x="{LEFT}" y="20" font-size="14" font-weight="bold">{escape(title)}</text>',
    ]
    for k in range(5):  # kWh grid and axis
        v = top * k / 4
        out.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(v):.1f}" y2="{y(v):.1f}" '
            'stroke="#e0e0e0"/>'
            f'<text x="{LEFT - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:,.0f}</text>'
            f'<text x="{WIDTH - RIGHT + 6}" y="{y(v) + 4:.1f}">{25 * k} %</text>'
        )
    out.append(
        f'<text x="16" y="{TOP + plot_h / 2:.0f}" transform="rotate(-90 16 {TOP + plot_h / 2:.0f})"'
        ' text-anchor="middle">kWh per day</text>'
    )
    dots: list[str] = []  # a day's share of intervals in full (days with awards only)
    for i, d in enumerate(days):
        x = LEFT + i * slot + (slot - bar) / 2
        awarded, delivered = float(d["awarded_kwh"]), float(d["delivered_kwh"])
        tip = (
            f"{d['date']}: awarded {awarded:,.1f} kWh, delivered {delivered:,.1f} kWh, "
            f"{d['intervals_delivered_in_full']} of {d['intervals_awarded']} intervals in full, "
            f"{d['departures_met']} of {d['departures']} departures met"
        )
        out.append(f"<g><title>{escape(tip)}</title>")
        out.append(
            f'<rect x="{x:.2f}" y="{y(awarded):.2f}" width="{bar:.2f}" '
            f'height="{y(0) - y(awarded):.2f}" fill="none" stroke="#424242" stroke-width="0.6"/>'
        )
        out.append(
            f'<rect x="{x:.2f}" y="{y(delivered):.2f}" width="{bar:.2f}" '
            f'height="{y(0) - y(delivered):.2f}" fill="{DELIVERED}"/>'
        )
        level = min(max(delivered, 0.0), awarded)
        for cause, kwh in d["shortfall_causes_kwh"].items():  # stacked on what was delivered
            if kwh > 0 and cause in COLOURS:
                out.append(
                    f'<rect x="{x:.2f}" y="{y(level + kwh):.2f}" width="{bar:.2f}" '
                    f'height="{y(level) - y(level + kwh):.2f}" fill="{COLOURS[cause]}"/>'
                )
                level += kwh
        out.append("</g>")
        if d["intervals_awarded"]:
            share = d["intervals_delivered_in_full"] / d["intervals_awarded"]
            dots.append(
                f'<circle cx="{x + bar / 2:.2f}" cy="{TOP + plot_h * (1.0 - share):.2f}" r="2.5" '
                f'fill="{IN_FULL}"/>'
            )
    out += dots
    step = max(1, n // 12)  # date labels, about a dozen
    for i in range(0, len(days), step):
        x = LEFT + i * slot + slot / 2
        out.append(
            f'<text x="{x:.1f}" y="{TOP + plot_h + 14}" text-anchor="middle">'
            f"{escape(str(days[i]['date'])[5:])}</text>"
        )
    legend = [("delivered", DELIVERED), ("awarded (outline)", "#424242")]
    legend += [(f"short: {c}", col) for c, col in COLOURS.items()]
    legend.append(("intervals in full (right axis)", IN_FULL))
    for k, (name, colour) in enumerate(legend):
        lx = LEFT + (k % 5) * 170
        ly = HEIGHT - 36 + (k // 5) * 16
        out.append(
            f'<rect x="{lx}" y="{ly - 9}" width="10" height="10" fill="{colour}"/>'
            f'<text x="{lx + 14}" y="{ly}">{escape(name)}</text>'
        )
    out.append("</svg>")
    return "\n".join(out)
