"""The admin page's SVG chart, as a pure function (``gateway/admin_chart.py``)."""

from __future__ import annotations

from gateway import admin_chart


def test_chart_has_one_series_per_idp_and_fills_gaps() -> None:
    ok = [
        {"idp": "corp", "day": "2025-03-01", "count": 3},
        {"idp": "corp", "day": "2025-03-04", "count": 1},
    ]
    failed = [{"idp": "social", "day": "2025-03-02", "count": 2}]
    chart = admin_chart.build("day", ok, failed)
    assert chart.buckets == ["2025-03-01", "2025-03-02", "2025-03-03", "2025-03-04"]
    assert [s.idp for s in chart.series] == ["corp", "social"]
    drawn = admin_chart.svg(chart)
    assert drawn.count('<g class="series"') == 2 and drawn.count("<polyline") == 4
    assert "corp: 4 sign-ins, 0 failures; social: 0 sign-ins, 2 failures" in drawn
    assert drawn.count("<circle") == 3  # one per non-zero point


def test_chart_hours_keep_their_zone_suffix_and_escape_names() -> None:
    ok = [
        {"idp": "<b>&", "hour": "2025-03-01T22:00Z", "count": 1},
        {"idp": "<b>&", "hour": "2025-03-02T01:00Z", "count": 1},
    ]
    chart = admin_chart.build("hour", ok, [])
    assert chart.buckets[1] == "2025-03-01T23:00Z" and len(chart.buckets) == 4
    drawn = admin_chart.svg(chart)
    assert "<b>" not in drawn and "&lt;b&gt;&amp;" in drawn
    assert ">03-01 22:00</text>" in drawn  # short axis label, whole bucket in the tooltip
    assert "2025-03-01T22:00Z: 1 sign-ins" in drawn


def test_empty_chart_says_so() -> None:
    chart = admin_chart.build("day", [], [])
    assert chart.empty
    assert "No sign-ins or failures" in admin_chart.svg(chart)
