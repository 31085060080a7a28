"""Fixtures for the training module's tests: a small synthetic dataset in the labels.csv format."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
WEIGHTS_DIR = SHARED / "weights"
HAM = SHARED / "data" / "ham10000"


def make_synthetic_dataset(root: Path, n_lesions: int = 30, images_per_lesion: int = 2, seed: int = 0) -> Path:
    """Skin-coloured images with a dark blob: malignant = large, irregular, dark; benign = small, round, lighter."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for lesion in range(n_lesions):
        malignant = lesion % 2 == 1
        for k in range(images_per_lesion):
            img = np.full((60, 80, 3), (150, 170, 210), np.uint8)
            img = np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
            centre = (40 + int(rng.integers(-5, 6)), 30 + int(rng.integers(-4, 5)))
            if malignant:
                axes = (int(rng.integers(15, 22)), int(rng.integers(9, 14)))
                cv2.ellipse(img, centre, axes, float(rng.uniform(0, 180)), 0, 360, (40, 30, 60), -1)
            else:
                r = int(rng.integers(6, 10))
                cv2.circle(img, centre, r, (90, 100, 140), -1)
            name = f"images/L{lesion:03d}_{k}.jpg"
            cv2.imwrite(str(root / name), img)
            rows.append({"file": name, "label": "malignant" if malignant else "benign", "lesion_id": f"L{lesion:03d}",
                         "dx": "mel" if malignant else "nv"})
    with open(root / "labels.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["file", "label", "lesion_id", "dx"])
        w.writeheader()
        w.writerows(rows)
    return root


@pytest.fixture
def make_dataset():
    """Factory: make_dataset(root, n_lesions=..., images_per_lesion=...) -> dataset folder."""
    return make_synthetic_dataset


@pytest.fixture
def synthetic_dataset(tmp_path: Path) -> Path:
    return make_synthetic_dataset(tmp_path / "data")


@pytest.fixture
def lite_weights() -> Path:
    if not (WEIGHTS_DIR / "efficientnet_lite0_imagenet_keras_layout.npz").is_file():
        pytest.skip(f"ImageNet EfficientNet-Lite weights not staged at {WEIGHTS_DIR} (see ../shared/weights/README.md)")
    return WEIGHTS_DIR
