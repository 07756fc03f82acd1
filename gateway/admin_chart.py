"""The admin page's chart: sign-ins and failures per IdP over time, drawn as inline SVG.

Drawn by the server so the page needs no script and no chart library (its CSP allows
neither). One series (``<g class="series" data-idp=...>``) per IdP: a solid line for
sign-ins (``login_succeeded``) and a dashed line for failures (``login_failed``), each point
with a ``<title>`` tooltip. The SVG has ``role="img"`` and a title and description; the page
also shows the same numbers as a table, for screen readers and for copying.

The x axis is every bucket from the first to the last one with data (days or hours, empty
ones as 0), up to ``MAX_BUCKETS``; beyond that only buckets with data are shown.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from html import escape

WIDTH, HEIGHT = 760, 260
LEFT, RIGHT, TOP, BOTTOM = 48, 12, 12, 40
MAX_BUCKETS = 2000
# Okabe-Ito: told apart with the common colour-vision deficiencies
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
FORMATS = {"day": "%Y-%m-%d", "hour": "%Y-%m-%dT%H:00"}
STEPS = {"day": timedelta(days=1), "hour": timedelta(hours=1)}


@dataclass
class Series:
    idp: str
    colour: str
    ok: dict[str, int] = field(default_factory=dict)  # bucket -> sign-ins
    failed: dict[str, int] = field(default_factory=dict)  # bucket -> failures


@dataclass
class Chart:
    bucket: str
    buckets: list[str]
    series: list[Series]

    @property
    def empty(self) -> bool:
        return not self.buckets


def build(bucket: str, ok: list[Mapping[str, object]], failed: list[Mapping[str, object]]) -> Chart:
    """From two ``stats(by=("idp", bucket))`` grids: the sign-in one and the failure one."""
    by_idp: dict[str, Series] = {}
    for rows, attr in ((ok, "ok"), (failed, "failed")):
        for row in rows:
            idp = str(row.get("idp") or "(none)")
            if idp not in by_idp:
                by_idp[idp] = Series(idp, "")
            getattr(by_idp[idp], attr)[str(row[bucket])] = int(row["count"])  # type: ignore[call-overload]
    series = [by_idp[k] for k in sorted(by_idp)]
    for i, s in enumerate(series):
        s.colour = PALETTE[i % len(PALETTE)]
    present = sorted({b for s in series for b in (*s.ok, *s.failed)})
    return Chart(bucket, fill(bucket, present), series)


def fill(bucket: str, present: list[str]) -> list[str]:
    """Every bucket from the first to the last present one, so gaps show as zero."""
    if len(present) < 2:
        return present
    fmt, step = FORMATS[bucket], STEPS[bucket]
    try:
        first = datetime.strptime(present[0].removesuffix("Z"), fmt)
        last = datetime.strptime(present[-1].removesuffix("Z"), fmt)
    except ValueError:
        return present
    if (last - first) / step >= MAX_BUCKETS:
        return present
    suffix = "Z" if present[0].endswith("Z") else ""
    out, moment = [], first
    while moment <= last:
        out.append(moment.strftime(fmt) + suffix)
        moment += step
    return sorted(set(out) | set(present))


def svg(chart: Chart, title: str = "Sign-ins and failures per IdP") -> str:
    """The chart as an ``<svg>`` element (every text escaped)."""
    n = len(chart.buckets)
    peak = max([1, *(v for s in chart.series for v in (*s.ok.values(), *s.failed.values()))])
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(i: int) -> float:
        return LEFT + (plot_w * (i + 0.5) / n if n else 0)

    def y(value: int) -> float:
        return TOP + plot_h * (1 - value / peak)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" id="chart" role="img" viewBox="0 0 {WIDTH} '
        f'{HEIGHT}" aria-labelledby="chart-title chart-desc" width="100%" '
        f'preserveAspectRatio="xMidYMid meet">',
        f'<title id="chart-title">{escape(title)}</title>',
        f'<desc id="chart-desc">{escape(describe(chart))}</desc>',
        f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{WIDTH - RIGHT}" y2="{TOP + plot_h}" '
        'stroke="#555"/>',
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + plot_h}" stroke="#555"/>',
    ]
    for value in sorted({0, peak // 2, peak}):
        parts.append(
            f'<text x="{LEFT - 6}" y="{y(value) + 4:.1f}" text-anchor="end" font-size="11" '
            f'fill="#333">{value}</text>'
        )
    for i in _label_positions(n):
        parts.append(
            f'<text x="{x(i):.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle" '
            f'font-size="11" fill="#333">{escape(short(chart.buckets[i]))}</text>'
        )
    for s in chart.series:
        parts.append(f'<g class="series" data-idp="{escape(s.idp)}">')
        for kind, counts, dash in (("sign-ins", s.ok, ""), ("failures", s.failed, "6 4")):
            points = [
                (x(i), y(counts.get(b, 0)), counts.get(b, 0)) for i, b in enumerate(chart.buckets)
            ]
            line = " ".join(f"{px:.1f},{py:.1f}" for px, py, _ in points)
            dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
            parts.append(
                f'<polyline class="{"ok" if not dash else "failed"}" fill="none" '
                f'stroke="{s.colour}" stroke-width="2"{dash_attr} points="{line}">'
                f"<title>{escape(s.idp)} {kind}</title></polyline>"
            )
            for (px, py, value), b in zip(points, chart.buckets, strict=True):
                if value:
                    parts.append(
                        f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3" fill="{s.colour}">'
                        f"<title>{escape(s.idp)} {escape(b)}: {value} {kind}</title></circle>"
                    )
        parts.append("</g>")
    parts.append("</svg>")
    return "".join(parts)


def short(bucket: str) -> str:
    """An axis label: ``2025-03-01T05:00Z`` as ``03-01 05:00`` (tooltips keep the whole)."""
    return bucket[5:16].replace("T", " ") if "T" in bucket else bucket


def _label_positions(n: int, most: int = 6) -> list[int]:
    if n == 0:
        return []
    step = max(1, -(-n // most))
    return list(range(0, n, step))


def describe(chart: Chart) -> str:
    """One sentence for screen readers: totals per IdP and the range."""
    if chart.empty:
        return "No sign-ins or failures match the filters."
    totals = "; ".join(
        f"{s.idp}: {sum(s.ok.values())} sign-ins, {sum(s.failed.values())} failures"
        for s in chart.series
    )
    return f"Per {chart.bucket} from {chart.buckets[0]} to {chart.buckets[-1]}. {totals}."
