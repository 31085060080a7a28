"""No camera: the app works by upload only."""

from __future__ import annotations

from typing import Any

from . import CameraUnavailable


class NoCamera:
    kind = "none"

    def __init__(self, arg: str = "") -> None:
        pass

    def open(self) -> None:
        pass

    def read(self):
        return None

    def capture(self):
        raise CameraUnavailable("no camera is configured on this device: upload an image instead")

    def close(self) -> None:
        pass

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "source": "upload only"}
