"""A USB dermatoscope / webcam through OpenCV (`opencv:0` or `opencv:/dev/video2`)."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from . import CameraError


class OpenCVCamera:
    kind = "opencv"

    def __init__(self, device: str = "0", width: int = 1280, height: int = 960) -> None:
        device = device or "0"
        self.device: int | str = int(device) if device.isdigit() else device
        self.width, self.height = width, height
        self._cap: cv2.VideoCapture | None = None

    def open(self) -> None:
        cap = cv2.VideoCapture(self.device)
        if not cap.isOpened():
            cap.release()
            raise CameraError(f"OpenCV camera {self.device!r} cannot be opened: is it plugged in?")
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        self._cap = cap

    def read(self) -> np.ndarray | None:
        if self._cap is None:
            raise CameraError("OpenCV camera is not open")
        ok, frame = self._cap.read()
        if not ok or frame is None:
            raise CameraError(f"OpenCV camera {self.device!r} stopped delivering frames (unplugged?)")
        if frame.ndim == 2:
            frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
        return frame

    def capture(self) -> np.ndarray:
        # The driver may hold a stale buffered frame: drop one, keep the next.
        if self._cap is not None:
            self._cap.grab()
        frame = self.read()
        return frame.copy()

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "source": f"opencv:{self.device}"}
