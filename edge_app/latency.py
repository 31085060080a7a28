"""Rolling latency statistics per stage and end to end.

The same numbers drive the UI, `/api/stats` and `edge-bench`.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable, Mapping

import numpy as np

STAT_KEYS = ("count", "mean", "std", "min", "p50", "p90", "p99", "max")


def summarize(samples_ms: Iterable[float]) -> dict[str, float]:
    """count, mean, std, min, p50, p90, p99, max of a list of milliseconds (empty -> zeros)."""
    arr = np.asarray(list(samples_ms), dtype=np.float64)
    if arr.size == 0:
        return {k: 0.0 for k in STAT_KEYS} | {"count": 0}
    p50, p90, p99 = np.percentile(arr, [50, 90, 99])
    return {
        "count": int(arr.size),
        "mean": round(float(arr.mean()), 3),
        "std": round(float(arr.std()), 3),
        "min": round(float(arr.min()), 3),
        "p50": round(float(p50), 3),
        "p90": round(float(p90), 3),
        "p99": round(float(p99), 3),
        "max": round(float(arr.max()), 3),
    }


class LatencyStats:
    """A rolling window (last `window` samples) per named stage. Thread-safe."""

    def __init__(self, window: int = 500) -> None:
        self.window = window
        self._samples: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def add(self, timings_ms: Mapping[str, float]) -> None:
        with self._lock:
            for stage, ms in timings_ms.items():
                self._samples.setdefault(stage, deque(maxlen=self.window)).append(float(ms))

    def snapshot(self) -> dict[str, dict[str, float]]:
        with self._lock:
            copies = {stage: list(values) for stage, values in self._samples.items()}
        return {stage: summarize(values) for stage, values in copies.items()}
