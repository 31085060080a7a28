"""Coordinates for the two small charts (drawn by templates as inline SVG, no script):
the follow-up trend of one lesion and the latency of the last screenings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..decisions import is_verdict
from ..store import ScreeningRecord
from .records import local_time, percent


def _x_axis(n: int, left: float, width: float):
    return lambda i: left + (width / 2 if n <= 1 else width * i / (n - 1))


def trend_svg(records: Sequence[ScreeningRecord], width: int = 760, height: int = 170, max_labels: int = 6) -> dict[str, Any]:
    """Malignant probability per screening of one lesion, oldest first.

    Only verdicts are joined by the line; a no-verdict screening is a hollow grey mark
    (its probability is kept for audit, not read as a result). Build a narrow chart
    (`width` ~360) for phones so its 11-unit text stays readable.
    """
    pad_l, pad_r, pad_t, pad_b = 44, 16, 12, 26
    w, h = width - pad_l - pad_r, height - pad_t - pad_b
    n = len(records)
    x = _x_axis(n, pad_l, w)

    def y(p: float) -> float:
        return pad_t + h * (1.0 - p)

    every = max(1, -(-n // max_labels))
    times = [local_time(r.timestamp) for r in records]
    one_day = len({t[:10] for t in times}) <= 1
    points = [
        {"x": round(x(i), 1), "y": round(y(r.malignant_probability), 1), "p": r.malignant_probability,
         "text": percent(r.malignant_probability), "verdict": is_verdict(r.decision),
         "above": is_verdict(r.decision) and r.malignant_probability >= r.threshold, "when": times[i],
         "label": (times[i][11:] if one_day else times[i][5:10]) if (i % every == 0 or i == n - 1) else ""}
        for i, r in enumerate(records)
    ]
    threshold = records[-1].threshold if records else 0.5
    return {
        "width": width, "height": height, "points": points,
        "polyline": " ".join(f"{p['x']},{p['y']}" for p in points if p["verdict"]),
        "threshold_y": round(y(threshold), 1), "threshold_text": percent(threshold),
        "grid": [{"y": round(y(v), 1), "label": f"{int(v * 100)}%"} for v in (0.0, 0.5, 1.0)],
        "left": pad_l, "right": width - pad_r, "bottom": height - pad_b,
    }


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
