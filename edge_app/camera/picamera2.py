"""The Raspberry Pi camera through picamera2 / libcamera.

`picamera2` exists only on a Pi (apt `python3-picamera2`), so it is imported
when the camera is opened. A 1280x960 preview stream runs all the time (the live
preview, and the frames Capture analyses by id); a capture without a frame id
switches to the full-resolution still mode for one frame and back.
Only documented API is used: Picamera2(), create_preview_configuration,
create_still_configuration, configure, start, capture_array,
switch_mode_and_capture_array, stop, close.
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

from . import CameraError

# The preview stream's frames are what Capture analyses (capture by preview frame id, camera/ring.py), so
# they are taken at a size worth screening, like a USB dermatoscope's; the screen gets them shrunk.
PREVIEW_SIZE = (1280, 960)


class Picamera2Camera:
    kind = "picamera2"

    def __init__(self, arg: str = "") -> None:
        self.camera_num = int(arg) if arg.isdigit() else 0
        self._cam = None
        self._still_config = None

    def open(self) -> None:
        try:
            Picamera2 = importlib.import_module("picamera2").Picamera2
        except ImportError:
            raise CameraError("picamera2 is not installed (on a Pi: sudo apt install python3-picamera2, "
                              "and create the venv with --system-site-packages)") from None
        try:
            cam = Picamera2(self.camera_num)
        except Exception as exc:  # noqa: BLE001 - libcamera raises IndexError/RuntimeError when absent
            raise CameraError(f"no Pi camera {self.camera_num} found ({exc}): check the ribbon cable") from None
        try:
            # "RGB888" in picamera2 is B,G,R byte order: already OpenCV's BGR.
            preview = cam.create_preview_configuration(main={"size": PREVIEW_SIZE, "format": "RGB888"})
            self._still_config = cam.create_still_configuration(main={"format": "RGB888"})
            cam.configure(preview)
            cam.start()
        except Exception as exc:  # noqa: BLE001
            cam.close()
            raise CameraError(f"Pi camera {self.camera_num} cannot start ({exc})") from None
        self._cam = cam

    def _bgr(self, arr: Any) -> np.ndarray:
        frame = np.asarray(arr)
        if frame.ndim != 3 or frame.shape[2] < 3:
            raise CameraError(f"Pi camera returned an unexpected frame shape {frame.shape}")
        return np.ascontiguousarray(frame[..., :3], dtype=np.uint8)

    def read(self) -> np.ndarray | None:
        if self._cam is None:
            raise CameraError("Pi camera is not open")
        try:
            return self._bgr(self._cam.capture_array("main"))
        except CameraError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise CameraError(f"Pi camera stopped delivering frames ({exc})") from None

    def capture(self) -> np.ndarray:
        if self._cam is None:
            raise CameraError("Pi camera is not open")
        try:
            return self._bgr(self._cam.switch_mode_and_capture_array(self._still_config, "main"))
        except CameraError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise CameraError(f"Pi camera still capture failed ({exc})") from None

    def close(self) -> None:
        cam, self._cam = self._cam, None
        if cam is not None:
            try:
                cam.stop()
            finally:
                cam.close()

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "source": f"picamera2:{self.camera_num}"}
