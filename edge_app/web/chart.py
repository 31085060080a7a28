"""Coordinates for the two small charts (drawn by templates as inline SVG, no script):
the follow-up trend of one lesion and the latency of the last screenings."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ..decisions import is_verdict
from ..store import ScreeningRecord
from .records import local_time, percent


def _x_axis(n: int, left: float, width: float):
    return lambda i: left + (width / 2 if n <= 1 else width * i / (n - 1))


def trend_svg(records: Sequence[ScreeningRecord], width: int = 760, height: int = 190, max_labels: int = 6) -> dict[str, Any]:
    """Malignant probability per screening of one lesion, oldest first.

    Only verdicts have a height (and, when there are few, their value written beside them). A no-verdict
    screening is a grey "?" on its own "no result" row under the axis: its probability is kept for audit,
    never drawn. X labels are dates when the screenings span days, else times (with seconds when minutes
    repeat), each written once. Build a narrow chart (`width` ~360) for phones so its text stays readable.
    """
    pad_l, pad_r, pad_t, pad_b = 72, 40, 14, 46
    w, h = width - pad_l - pad_r, height - pad_t - pad_b
    n = len(records)
    x = _x_axis(n, pad_l, w)

    def y(p: float) -> float:
        return pad_t + h * (1.0 - p)

    every = max(1, -(-n // max_labels))
    labels = _time_labels([r.timestamp for r in records])
    points, last_label = [], None
    for i, r in enumerate(records):
        verdict = is_verdict(r.decision)
        label = labels[i] if (i % every == 0 or i == n - 1) and labels[i] != last_label else ""
        last_label = label or last_label
        point = {"x": round(x(i), 1), "verdict": verdict, "when": local_time(r.timestamp), "label": label}
        if verdict:
            point |= {"y": round(y(r.malignant_probability), 1), "text": percent(r.malignant_probability),
                      "above": r.malignant_probability >= r.threshold, "show_value": n <= max_labels,
                      "value_left": i == n - 1 and n > 1}  # the last value goes left of its point, inside the chart
        points.append(point)
    threshold = records[-1].threshold if records else 0.5
    times = [local_time(r.timestamp) for r in records]
    days = sorted({t[:10] for t in times})
    return {
        "width": width, "height": height, "points": points,
        "polyline": " ".join(f"{p['x']},{p['y']}" for p in points if p["verdict"]),
        "threshold_y": round(y(threshold), 1), "threshold_text": percent(threshold),
        "grid": [{"y": round(y(v), 1), "label": f"{int(v * 100)}%"} for v in (0.0, 0.5, 1.0)],
        "left": pad_l, "right": width - pad_r, "bottom": pad_t + h, "none_y": pad_t + h + 14,
        "label_y": height - 6, "has_none": any(not p["verdict"] for p in points),
        "span": days[0] if len(days) == 1 else (f"{days[0]} to {days[-1]}" if days else ""),
    }


def _time_labels(timestamps: Sequence[str]) -> list[str]:
    """One x label per screening: '6 Dec' when they span days, '14:02' in one day, '14:02:31' when minutes repeat."""
    when = [datetime.fromisoformat(t).astimezone() for t in timestamps]
    if len({w.date() for w in when}) > 1:
        return [f"{w.day} {w:%b}" for w in when]
    minutes = [f"{w:%H:%M}" for w in when]
    if len(set(minutes)) == len(minutes):
        return minutes
    return [f"{w:%H:%M:%S}" for w in when]


def latency_svg(records: Sequence[ScreeningRecord], stage: str = "total", width: int = 360, height: int = 150) -> dict[str, Any]:
    """Milliseconds of one stage over the last screenings (oldest first), with the window's p50 as a line."""
    values = [r.timings_ms[stage] for r in records if stage in r.timings_ms]
    pad_l, pad_r, pad_t, pad_b = 44, 10, 10, 22
    w, h = width - pad_l - pad_r, height - pad_t - pad_b
    top = max(values) * 1.1 if values else 1.0
    x = _x_axis(len(values), pad_l, w)

    def y(ms: float) -> float:
        return pad_t + h * (1.0 - ms / top)

    ordered = sorted(values)
    median = ordered[len(ordered) // 2] if ordered else 0.0
    return {
        "width": width, "height": height, "count": len(values),
        "polyline": " ".join(f"{round(x(i), 1)},{round(y(v), 1)}" for i, v in enumerate(values)),
        "points": [{"x": round(x(i), 1), "y": round(y(v), 1)} for i, v in enumerate(values)],
        "median_y": round(y(median), 1), "median": median,
        "grid": [{"y": round(y(v), 1), "label": f"{v:.0f}"} for v in (0.0, top / 2, top)],
        "left": pad_l, "right": width - pad_r, "bottom": height - pad_b,
    }
