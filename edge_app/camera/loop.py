"""The capture loop: the one thread that owns the camera.

It keeps the last frames by id (`ring.FrameRing`: the live preview shows them, and
Capture analyses the one that was on screen at the tap), serves
full-quality capture requests from other threads (a camera is not thread-safe),
and when the camera disappears it reports the error and re-opens it with
exponential backoff. A heartbeat, refreshed at least every `tick_s` even when
idle, lets the service watchdog notice a hung camera driver.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from concurrent.futures import Future
from typing import Any

import numpy as np

from ..images import encode_jpeg, shrink_to_fit
from . import Camera, CameraError, CameraUnavailable
from .ring import FrameRing

log = logging.getLogger(__name__)

# A preview frame fits inside this: the Screen's preview panel is 376x280 on the 800x480 kiosk. Bigger frames
# cost the kiosk browser decode time that competes with the device path on the Pi's cores (measured:
# benchmarks/browser_latency.py); the frame Capture analyses is the camera's own, at full resolution.
PREVIEW_BOX = (480, 360)
PREVIEW_QUALITY = 75
RING_SECONDS = 1.2  # frames kept: the tap's frame is still there when its POST arrives (1280x960 at 12 fps: 15 frames, 55 MB)


class CaptureLoop:
    def __init__(
        self,
        camera: Camera,
        preview_fps: float = 12.0,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 30.0,
        tick_s: float = 0.5,
    ) -> None:
        self.camera = camera
        self.preview_interval_s = 1.0 / preview_fps
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.tick_s = tick_s
        self._requests: queue.Queue[Future | None] = queue.Queue()  # None wakes the loop to stop
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.ring = FrameRing(max(6, math.ceil(RING_SECONDS * preview_fps)), encode=preview_jpeg_of)
        self._heartbeat = time.monotonic()
        self._is_open = False
        self._error: str | None = None
        self._retry_at = 0.0
        self._backoff_s = backoff_initial_s
        self._reopens = 0
        self.frames = 0

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="capture-loop", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._requests.put(None)
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self._close_camera()
        while not self._requests.empty():
            request = self._requests.get_nowait()
            if request is not None and request.set_running_or_notify_cancel():
                request.set_exception(CameraUnavailable("the app is shutting down"))

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def heartbeat_age_s(self) -> float:
        return time.monotonic() - self._heartbeat

    # ------------------------------------------------------------------ for other threads

    @property
    def has_camera(self) -> bool:
        return self.camera.kind != "none"

    def capture(self, timeout_s: float = 10.0) -> np.ndarray:
        """A full-quality frame, taken on the loop thread. Raises CameraUnavailable."""
        if not self.has_camera:
            self.camera.capture()  # raises the source's own message
        if not self.is_alive():
            raise CameraUnavailable("the capture loop is not running")
        with self._lock:
            if not self._is_open:
                raise CameraUnavailable(f"camera is not connected ({self._error or 'starting'}); "
                                        "reconnecting automatically; upload an image meanwhile")
        request: Future = Future()
        self._requests.put(request)
        try:
            return request.result(timeout=timeout_s)
        except TimeoutError:
            request.cancel()
            raise CameraUnavailable(f"camera did not deliver a frame within {timeout_s:.0f} s") from None

    def preview_jpeg(self) -> bytes | None:
        """The newest frame's preview JPEG (made once per frame, shared by every viewer)."""
        newest = self.ring.wait_jpeg(0, 0)
        return newest[1] if newest else None

    def frame(self, frame_id: int) -> np.ndarray:
        """The frame a preview showed as `frame_id`, at the camera's resolution. Raises FrameExpired
        (`CameraError`) when it is no longer kept, CameraUnavailable without a camera."""
        if not self.has_camera:
            self.camera.capture()  # raises the source's own message
        return self.ring.frame(frame_id)

    def status(self) -> dict[str, Any]:
        with self._lock:
            state = "none" if not self.has_camera else ("live" if self._is_open else "reconnecting")
            out = self.camera.describe() | {"state": state, "error": self._error, "reopens": self._reopens, "frames": self.frames}
            if state == "reconnecting":
                out["retry_in_s"] = round(max(0.0, self._retry_at - time.monotonic()), 1)
            return out

    # ------------------------------------------------------------------ loop thread

    def _run(self) -> None:
        next_preview = 0.0
        while not self._stop.is_set():
            self._heartbeat = time.monotonic()
            if not self.has_camera:
                self._serve_requests(self.tick_s)
                continue
            if not self._is_open:
                if time.monotonic() >= self._retry_at:
                    self._try_open()
                else:
                    self._serve_requests(min(self.tick_s, max(0.01, self._retry_at - time.monotonic())))
                continue
            self._serve_requests(0)
            now = time.monotonic()
            if now >= next_preview:  # a steady cadence: a late frame does not push every later one back
                next_preview += self.preview_interval_s
                if next_preview <= now:
                    next_preview = now + self.preview_interval_s
                try:
                    frame = self.camera.read()
                except Exception as exc:  # noqa: BLE001 - any driver failure: report and reconnect
                    self._lost(exc)
                    continue
                if frame is not None:
                    self.frames += 1
                    self.ring.push(frame)
            self._serve_requests(min(self.tick_s, max(0.0, next_preview - time.monotonic())))

    def _serve_requests(self, wait_s: float) -> None:
        try:
            request = self._requests.get(timeout=wait_s) if wait_s > 0 else self._requests.get_nowait()
        except queue.Empty:
            return
        if request is None or not request.set_running_or_notify_cancel():
            return
        if not self._is_open and self.has_camera:
            request.set_exception(CameraUnavailable(f"camera is not connected ({self._error})"))
            return
        try:
            request.set_result(self.camera.capture())
        except CameraUnavailable as exc:
            request.set_exception(exc)
        except Exception as exc:  # noqa: BLE001
            self._lost(exc)
            request.set_exception(CameraUnavailable(f"camera failed during capture ({exc}); reconnecting"))

    def _try_open(self) -> None:
        try:
            self.camera.open()
        except Exception as exc:  # noqa: BLE001
            with self._lock:
                self._error = str(exc)
                self._retry_at = time.monotonic() + self._backoff_s
            log.warning("camera %s unavailable: %s (retry in %.0f s)", self.camera.kind, exc, self._backoff_s)
            self._backoff_s = min(self._backoff_s * 2, self.backoff_max_s)
            return
        with self._lock:
            self._is_open = True
            self._error = None
        self._backoff_s = self.backoff_initial_s
        log.info("camera %s open: %s", self.camera.kind, self.camera.describe())

    def _lost(self, exc: BaseException) -> None:
        log.warning("camera %s lost: %s", self.camera.kind, exc)
        self._close_camera()
        with self._lock:
            self._error = str(exc) if isinstance(exc, CameraError) else f"{type(exc).__name__}: {exc}"
            self._reopens += 1
            self._retry_at = time.monotonic() + self._backoff_s
        self._backoff_s = min(self._backoff_s * 2, self.backoff_max_s)

    def _close_camera(self) -> None:
        self.ring.clear()
        with self._lock:
            was_open, self._is_open = self._is_open, False
        if was_open:
            try:
                self.camera.close()
            except Exception as exc:  # noqa: BLE001
                log.warning("camera close failed: %s", exc)


def preview_jpeg_of(frame: np.ndarray) -> bytes:
    """A frame shrunk to fit the kiosk screen, as JPEG."""
    return encode_jpeg(_shrink(frame), quality=PREVIEW_QUALITY)


def _shrink(frame: np.ndarray) -> np.ndarray:
    return shrink_to_fit(frame, *PREVIEW_BOX)
