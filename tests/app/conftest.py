"""Fixtures for the device app: the real model, a real SQLite store in tmp_path, fake cameras.

The model is models/student_fp16.tflite when it has been shipped, else the core's
test model tests/fixtures/tiny_fp16.tflite.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge_app.camera import CameraError
from edge_app.images import encode_jpeg
from edge_app.runtime import DEFAULT_MODEL, Classifier
from edge_app.web import create_app, shutdown
from tests.conftest import real_dermoscopy

ROOT = Path(__file__).resolve().parents[2]
TINY_MODEL = ROOT / "tests" / "fixtures" / "tiny_fp16.tflite"


def model_path() -> Path:
    return DEFAULT_MODEL if DEFAULT_MODEL.is_file() and DEFAULT_MODEL.with_suffix(".json").is_file() else TINY_MODEL


def lesion_image(seed: int = 0, size: tuple[int, int] = (480, 640), dark: int = 60, blur: float = 0.0,
                 brightness: float = 1.0) -> np.ndarray:
    """A dermoscopy frame of `size` (h, w): a real dermoscopy image (isic_archive test nevus) when ../shared/data is
    present and no defect is asked for (the shipped model's scope check refuses synthetic drawings), else a skin-coloured,
    textured background with a dark irregular ellipse (BGR uint8); `dark`, `blur` and `brightness` make
    the defects the quality gate must catch, always on the synthetic drawing."""
    if dark == 60 and blur == 0.0 and brightness == 1.0:
        real = real_dermoscopy(seed, (size[1], size[0]))
        if real is not None:
            return real
    rng = np.random.default_rng(seed)
    h, w = size
    skin = np.array([150, 175, 215], np.float32)  # BGR
    img = np.empty((h, w, 3), np.float32)
    img[:] = skin
    img += rng.normal(0, 7, (h, w, 1)).astype(np.float32)  # skin texture
    mask = np.zeros((h, w), np.uint8)
    centre = (w // 2 + int(rng.integers(-30, 30)), h // 2 + int(rng.integers(-20, 20)))
    axes = (int(w * rng.uniform(0.12, 0.2)), int(h * rng.uniform(0.12, 0.2)))
    cv2.ellipse(mask, centre, axes, float(rng.uniform(0, 180)), 0, 360, 255, -1)
    mask = cv2.GaussianBlur(mask, (0, 0), 4).astype(np.float32)[..., None] / 255.0
    lesion = np.array([dark * 0.6, dark * 0.8, dark], np.float32)
    img = img * (1 - mask) + (lesion + rng.normal(0, 6, (h, w, 1)).astype(np.float32)) * mask
    img = np.clip(img * brightness, 0, 255).astype(np.uint8)
    if blur:
        img = cv2.GaussianBlur(img, (0, 0), blur)
    return img


def lesion_jpeg(seed: int = 0, **kw: Any) -> bytes:
    return encode_jpeg(lesion_image(seed, **kw), 90)


class FakeCamera:
    """Satisfies edge_app.camera.Camera; `fail()` makes it vanish like an unplugged USB camera."""

    kind = "fake"

    def __init__(self, frames: list[np.ndarray] | None = None) -> None:
        self.frames = frames or [lesion_image(i) for i in range(3)]
        self.index = 0
        self.opened = 0
        self.captures = 0
        self.present = True
        self.is_open = False
        self.lock = threading.Lock()

    def open(self) -> None:
        if not self.present:
            raise CameraError("fake camera unplugged")
        self.opened += 1
        self.is_open = True

    def read(self):
        if not self.present:
            raise CameraError("fake camera unplugged")
        return self.frames[self.index % len(self.frames)]

    def capture(self):
        if not self.present:
            raise CameraError("fake camera unplugged")
        with self.lock:
            self.captures += 1
            self.index += 1
            return self.frames[self.index % len(self.frames)].copy()

    def close(self) -> None:
        self.is_open = False

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "source": "test frames"}


@pytest.fixture(scope="session")
def classifier() -> Classifier:
    return Classifier(model_path(), num_threads=1)


@pytest.fixture
def camera() -> FakeCamera:
    return FakeCamera()


@pytest.fixture
def make_app(tmp_path, classifier):
    apps = []

    def factory(**config: Any):
        cfg = {"TESTING": True, "DATA_DIR": str(tmp_path / "data"), "CLASSIFIER": classifier, "CAMERA": "none",
               "CAMERA_BACKOFF_S": 0.05, "PREVIEW_FPS": 20.0} | config
        app = create_app(cfg)
        apps.append(app)
        return app

    yield factory
    for app in apps:
        shutdown(app)


@pytest.fixture
def app(make_app, camera):
    app = make_app(CAMERA=camera)
    wait_for(lambda: app.extensions["dermaedge"].capture_loop.status()["state"] == "live")
    return app


@pytest.fixture
def client(app):
    return app.test_client()


def wait_for(predicate, timeout: float = 5.0, interval: float = 0.01) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError("condition not met in time")
