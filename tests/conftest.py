"""Fixtures shared by every test area: the model to test with, real data, synthetic images."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
SHIPPED_MODEL = REPO / "models" / "student_fp16.tflite"
TINY_MODEL = REPO / "tests" / "fixtures" / "tiny_fp16.tflite"
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def model_path() -> Path:
    """The real shipped model; the tiny test model only until one ships."""
    return SHIPPED_MODEL if SHIPPED_MODEL.exists() else TINY_MODEL


@pytest.fixture(scope="session")
def ham10000_dir() -> Path:
    d = SHARED_DATA / "ham10000"
    if not (d / "labels.csv").exists():
        pytest.skip(f"real HAM10000 data not found at {d} (../shared/data beside the repo)")
    return d


_REAL_TEST: list[Path] | None = None


def real_dermoscopy(index: int = 0, size: tuple[int, int] | None = None) -> np.ndarray | None:
    """A real dermoscopy image (the shipped test split's `index`-th isic_archive nevus, BGR), resized to
    `size` = (width, height) if given; None when ../shared/data is absent.

    The shipped model's scope check refuses synthetic drawings (rightly: they are not dermoscopy), so a
    test that needs a benign/malignant verdict from the real model screens a real image.
    """
    global _REAL_TEST
    if _REAL_TEST is None:
        from edge_app.labels_csv import read_labels_csv

        split = REPO / "models" / "splits" / "test.csv"
        rows = read_labels_csv(split)[0] if split.is_file() else []
        # isic_archive's nevi: 480-640 px originals, so a test frame of camera size is not a blurry blow-up
        _REAL_TEST = [SHARED_DATA / r["file"] for r in rows if r.get("dataset") == "isic_archive" and r.get("dx") == "nv"][:50]
        _REAL_TEST = [p for p in _REAL_TEST if p.is_file()]
    if not _REAL_TEST:
        return None
    img = cv2.imread(str(_REAL_TEST[index % len(_REAL_TEST)]), cv2.IMREAD_COLOR)
    if size is not None and (img.shape[1], img.shape[0]) != size:
        grow = size[0] > img.shape[1]
        img = cv2.resize(img, size, interpolation=cv2.INTER_CUBIC if grow else cv2.INTER_AREA)
    return img


def dermoscopy_image(width: int = 640, height: int = 480, index: int = 0) -> np.ndarray:
    """`real_dermoscopy`, or skip the test with the reason when ../shared/data is absent."""
    img = real_dermoscopy(index, (width, height))
    if img is None:
        pytest.skip(f"a real dermoscopy image is needed for a verdict from the shipped model; {SHARED_DATA} is absent")
    return img


def make_lesion_image(width: int = 640, height: int = 480, seed: int = 0, hair: bool = False,
                      vignette: bool = False) -> np.ndarray:
    """A dermoscopy-like BGR frame: skin, a dark irregular lesion, optional hairs / black vignette."""
    rng = np.random.default_rng(seed)
    img = np.empty((height, width, 3), np.uint8)
    img[:] = (150 + rng.integers(-10, 10), 170 + rng.integers(-10, 10), 215 + rng.integers(-10, 10))
    cx, cy = width // 2 + int(rng.integers(-20, 20)), height // 2 + int(rng.integers(-20, 20))
    axes = (int(min(width, height) * rng.uniform(0.12, 0.25)), int(min(width, height) * rng.uniform(0.1, 0.2)))
    cv2.ellipse(img, (cx, cy), axes, float(rng.uniform(0, 180)), 0, 360, (60, 55, 95), -1)
    if hair:
        for _ in range(8):
            p1 = tuple(int(v) for v in rng.integers(0, [width, height]))
            p2 = tuple(int(v) for v in rng.integers(0, [width, height]))
            cv2.line(img, p1, p2, (25, 20, 15), max(1, width // 300))
    if vignette:
        mask = np.zeros((height, width), np.uint8)
        cv2.circle(mask, (width // 2, height // 2), int(min(width, height) * 0.48), 255, -1)
        img[mask == 0] = 0
    noise = rng.integers(-4, 5, img.shape, dtype=np.int16)
    return np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8)


@pytest.fixture
def lesion_image() -> np.ndarray:
    return make_lesion_image()


@pytest.fixture
def lesion_jpeg(tmp_path: Path) -> Path:
    path = tmp_path / "lesion.jpg"
    cv2.imwrite(str(path), make_lesion_image(seed=1))
    return path
