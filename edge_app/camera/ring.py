"""Recent camera frames by id, and each one's preview JPEG made once for every viewer.

The capture loop pushes every frame it reads; ids increase by one per frame and are
never reused while the app runs. The live preview shows frames by id, and Capture
asks for the id that was on screen at the tap: `frame(id)` gives that very frame
(full resolution, as the camera delivered it) or raises `FrameExpired`, never a
different one. The ring is short (`size` frames, a second or so at preview rate),
so memory stays bounded even for a 12 MP camera.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

import numpy as np

from . import CameraError


class FrameExpired(CameraError):
    """The asked frame id is no longer (or was never) in the ring: capture again."""


class FrameRing:
    def __init__(self, size: int = 12, encode: Callable[[np.ndarray], bytes] | None = None) -> None:
        if size < 1:
            raise ValueError("the frame ring needs room for at least one frame")
        self.size = size
        self._encode = encode
        self._frames: OrderedDict[int, np.ndarray] = OrderedDict()
        self._jpegs: dict[int, bytes] = {}
        self._last_id = 0
        self._cond = threading.Condition()
        self._encode_lock = threading.Lock()  # one encode per frame, however many viewers ask at once
        self.encodes = 0  # preview JPEGs made (once per frame a viewer asked for)
        self.encode_s = 0.0  # time spent making them

    @property
    def last_id(self) -> int:
        with self._cond:
            return self._last_id

    def push(self, frame: np.ndarray) -> int:
        """Keep `frame` (not copied: a camera hands out a new array per frame) and return its id."""
        with self._cond:
            self._last_id += 1
            self._frames[self._last_id] = frame
            while len(self._frames) > self.size:
                old, _ = self._frames.popitem(last=False)
                self._jpegs.pop(old, None)
            self._cond.notify_all()
            return self._last_id

    def clear(self) -> None:
        """Drop every frame (the camera went away); ids keep increasing."""
        with self._cond:
            self._frames.clear()
            self._jpegs.clear()
            self._cond.notify_all()

    def frame(self, frame_id: int) -> np.ndarray:
        with self._cond:
            found = self._frames.get(frame_id)
            newest = self._last_id
        if found is None:
            if frame_id > newest or frame_id < 1:
                raise FrameExpired(f"preview frame {frame_id} does not exist (the newest is {newest}); capture again")
            raise FrameExpired(f"preview frame {frame_id} is too old to analyse (only the last {self.size} frames are "
                               "kept); capture again")
        return found

    def latest(self) -> tuple[int, np.ndarray] | None:
        with self._cond:
            if not self._frames:
                return None
            frame_id = next(reversed(self._frames))
            return frame_id, self._frames[frame_id]

    def wait_jpeg(self, after_id: int, timeout_s: float, go: Callable[[], bool] | None = None) -> tuple[int, bytes] | None:
        """The newest frame's preview JPEG once its id is above `after_id`; None on timeout, with no frames,
        or when `go()` says no at that moment (a screening runs: no encode competes with it).

        The encode happens once per frame, by the first viewer to ask; the others get the same bytes.
        """
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not self._frames or self._last_id <= after_id:
                left = deadline - time.monotonic()
                if (left <= 0 or not self._cond.wait(left)) and (not self._frames or self._last_id <= after_id):
                    return None
            frame_id = self._last_id
            jpeg = self._jpegs.get(frame_id)
            frame = self._frames[frame_id]
        if jpeg is None and go is not None and not go():
            return None
        if jpeg is None:
            if self._encode is None:
                raise RuntimeError("this frame ring makes no preview JPEGs")
            with self._encode_lock:
                with self._cond:
                    jpeg = self._jpegs.get(frame_id)
                if jpeg is None:
                    t0 = time.perf_counter()
                    jpeg = self._encode(frame)
                    with self._cond:
                        self.encodes += 1
                        self.encode_s += time.perf_counter() - t0
                        if frame_id in self._frames:
                            self._jpegs[frame_id] = jpeg
        return frame_id, jpeg
