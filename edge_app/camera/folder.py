"""Replays the images of a folder in a loop (demos, tests, a camera-less kiosk)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from ..images import ImageDecodeError, read_image
from . import CameraError

EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


class FolderCamera:
    kind = "folder"

    def __init__(self, directory: str, interval_s: float = 2.0) -> None:
        self.directory = Path(directory).expanduser()
        self.interval_s = interval_s
        self._files: list[Path] = []
        self._index = -1
        self._frame: np.ndarray | None = None
        self._shown_at = 0.0

    def open(self) -> None:
        if not self.directory.is_dir():
            raise CameraError(f"camera folder {self.directory} does not exist")
        self._files = sorted(p for p in self.directory.iterdir() if p.suffix.lower() in EXTENSIONS and p.is_file())
        if not self._files:
            raise CameraError(f"camera folder {self.directory} has no images ({', '.join(sorted(EXTENSIONS))})")
        self._index = -1
        self._advance()

    def _advance(self) -> None:
        for _ in range(len(self._files)):
            self._index = (self._index + 1) % len(self._files)
            try:
                self._frame = read_image(self._files[self._index])
                self._shown_at = time.monotonic()
                return
            except ImageDecodeError:
                continue
        raise CameraError(f"camera folder {self.directory}: no readable image")

    def read(self) -> np.ndarray | None:
        if not self._files:
            raise CameraError("camera folder is not open")
        if time.monotonic() - self._shown_at >= self.interval_s:
            self._advance()
        return self._frame

    def capture(self) -> np.ndarray:
        frame = self.read()
        if frame is None:
            raise CameraError(f"camera folder {self.directory}: no frame")
        return frame.copy()

    def close(self) -> None:
        self._files = []
        self._frame = None

    def describe(self) -> dict[str, Any]:
        current = self._files[self._index].name if self._files and self._index >= 0 else None
        return {"kind": self.kind, "source": str(self.directory), "images": len(self._files), "current": current}
