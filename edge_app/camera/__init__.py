"""Camera sources behind one small protocol, chosen by a key.

    none             upload only
    folder:DIR       replays the images of a folder in a loop (demos, tests)
    opencv:N|PATH    a USB dermatoscope / webcam through OpenCV
    picamera2[:N]    the Raspberry Pi camera through libcamera (imported lazily)
    auto             picamera2 > opencv:0 > none

Adding a source is adding a module with a class that satisfies `Camera`
and a line in `SOURCES`.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any, Protocol, runtime_checkable

import numpy as np

log = logging.getLogger(__name__)


class CameraError(RuntimeError):
    """The camera cannot deliver a frame. The message says what to do."""


class CameraUnavailable(CameraError):
    """No camera is configured or it is not connected right now (HTTP 503)."""


@runtime_checkable
class Camera(Protocol):
    kind: str

    def open(self) -> None:
        """Acquire the device; raise CameraError when it is not there."""

    def read(self) -> np.ndarray | None:
        """The current preview frame (BGR uint8), or None when there is none."""

    def capture(self) -> np.ndarray:
        """A full-quality still (BGR uint8) for screening."""

    def close(self) -> None:
        """Release the device; safe to call twice."""

    def describe(self) -> dict[str, Any]:
        """{"kind": ..., "source": ...} for the UI and /api/stats."""


SOURCES = {
    "none": ("edge_app.camera.none", "NoCamera"),
    "folder": ("edge_app.camera.folder", "FolderCamera"),
    "opencv": ("edge_app.camera.opencv", "OpenCVCamera"),
    "picamera2": ("edge_app.camera.picamera2", "Picamera2Camera"),
}


def parse_camera_spec(spec: str) -> tuple[str, str]:
    """'folder:/x' -> ('folder', '/x'); validates the key, not the device."""
    kind, _, arg = (spec or "").strip().partition(":")
    kind = kind.lower()
    if kind not in SOURCES and kind != "auto":
        raise CameraError(
            f"unknown camera {spec!r}; use auto, none, picamera2, opencv:N (device index or path) or folder:DIR"
        )
    if kind == "folder" and not arg:
        raise CameraError("camera folder needs a directory: folder:DIR")
    if kind in ("none", "auto") and arg:
        raise CameraError(f"camera {kind!r} takes no argument, got {spec!r}")
    return kind, arg


def make_camera(spec: str) -> Camera:
    """Build (not open) the source for a spec. `auto` probes picamera2 > opencv:0 > none."""
    kind, arg = parse_camera_spec(spec)
    if kind == "auto":
        return _auto()
    module, cls = SOURCES[kind]
    return getattr(importlib.import_module(module), cls)(arg)


def _auto() -> Camera:
    for spec in ("picamera2", "opencv:0"):
        try:
            cam = make_camera(spec)
            cam.open()
        except Exception as exc:  # noqa: BLE001 - probing: any failure means "not this one"
            log.info("camera auto: %s not available (%s)", spec, exc)
            continue
        cam.close()
        log.info("camera auto: using %s", spec)
        return cam
    log.info("camera auto: no camera found, upload only")
    return make_camera("none")
