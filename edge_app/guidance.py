"""Live guidance before the tap: what the quality gate and the scope check would say about the frame now.

The newest preview frame goes through the device path itself (`device_path.screen_image`:
the same scaling, quality gate and classifier with its scope check that Capture uses), so
the hint never disagrees with what a capture of that frame would get. The result is kept
for `min_interval_s` (about twice a second is enough for a person, and keeps the cost to
a few per cent of one core), and is skipped while a screening runs so a tap never waits
for it. Only the short wording lives here; the checks are those of `quality` and `scope`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .device_path import screen_image
from .runtime import Classifier

# One short line per finding, in the order a technician should fix them.
HINTS = {
    "too_dark": "too dark: add light",
    "too_bright": "too bright: reduce the glare",
    "blurry": "hold still",
    "no_lesion": "centre the lesion",
    "out_of_scope": "not a dermoscopy image",
}
READY = "looks good: tap Capture"


@dataclass
class Guidance:
    frame_id: int
    flags: list[str]  # quality flags, then "out_of_scope" when the scope check refuses the frame
    hints: list[str]
    ok: bool
    checked_at: float = field(default_factory=time.time)  # epoch seconds
    cost_ms: float = 0.0  # CPU time this check took

    def to_dict(self) -> dict[str, Any]:
        return {"frame_id": self.frame_id, "flags": self.flags, "hints": self.hints, "ok": self.ok,
                "text": " · ".join(self.hints) if self.hints else READY, "checked_at": round(self.checked_at, 3),
                "cost_ms": round(self.cost_ms, 2)}


def check(classifier: Classifier, frame_id: int, frame: np.ndarray) -> Guidance:
    """One frame through the device path; what a capture of it would be told."""
    t0 = time.thread_time()
    result = screen_image(classifier, frame)
    flags = list(result.quality.flags)
    if result.classification.in_scope is False:
        flags.append("out_of_scope")
    cost_ms = (time.thread_time() - t0) * 1000.0
    return Guidance(frame_id, flags, [HINTS.get(f, f) for f in flags], not flags, cost_ms=cost_ms)


class LiveGuide:
    """Guidance for the newest frame, at most once per `min_interval_s`, shared by every viewer."""

    def __init__(self, latest: Callable[[], tuple[int, np.ndarray] | None], classifier: Callable[[], Classifier],
                 busy: Callable[[], bool], min_interval_s: float = 0.45) -> None:
        self._latest = latest
        self._classifier = classifier
        self._busy = busy
        self.min_interval_s = min_interval_s
        self._lock = threading.Lock()
        self._last: Guidance | None = None
        self._last_at = 0.0
        self.checks = 0
        self.cpu_ms = 0.0  # CPU time spent on checks since start (the benchmark reads its rate)

    def now(self) -> Guidance | None:
        """The newest frame's guidance (fresh, or the last one when it is recent or a screening runs);
        None when there is no frame."""
        with self._lock:
            fresh = time.monotonic() - self._last_at < self.min_interval_s
            if self._last is not None and (fresh or self._busy()):
                return self._last
            newest = self._latest()
            if newest is None:
                return None
            if self._last is not None and newest[0] == self._last.frame_id:
                return self._last
            guidance = check(self._classifier(), *newest)
            self._last, self._last_at = guidance, time.monotonic()
            self.checks += 1
            self.cpu_ms += guidance.cost_ms
            return guidance
