"""Training-batch augmentation on cached preprocessed tensors (model range, RGB).

Applied only by `Batches(..., augment=True)`, which only the training split gets:
splits are made first, validation and test tensors are never augmented.
Ops (all cheap on 128 px tensors): horizontal/vertical flips, 90-degree rotations,
scale (zoom in = tighter crop, zoom out = looser field of view, edge-padded),
small translation, and colour jitter (brightness, contrast, per-channel gain:
a colour cast). Scale and colour are there for robustness to other cameras.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import keras
import numpy as np


@dataclass(frozen=True)
class AugmentParams:
    flips: bool = True
    rot90: bool = True
    scale: tuple[float, float] = (0.75, 1.3)  # >1 zooms in (tighter crop), <1 zooms out
    shift: float = 0.08  # fraction of the side
    brightness: float = 0.10  # added, in model units (1 unit = 128 grey levels)
    contrast: tuple[float, float] = (0.85, 1.15)
    channel_gain: float = 0.08  # per-channel multiplicative cast


def augment_image(x: np.ndarray, rng: np.random.Generator, p: AugmentParams) -> np.ndarray:
    """One (S, S, 3) float32 tensor -> an augmented copy."""
    s = x.shape[0]
    if p.flips and rng.random() < 0.5:
        x = x[:, ::-1]
    if p.flips and rng.random() < 0.5:
        x = x[::-1]
    if p.rot90:
        x = np.rot90(x, int(rng.integers(4)))
    zoom = float(np.exp(rng.uniform(np.log(p.scale[0]), np.log(p.scale[1]))))
    tx, ty = rng.uniform(-p.shift, p.shift, size=2) * s
    if abs(zoom - 1.0) > 1e-3 or abs(tx) > 0.5 or abs(ty) > 0.5:
        c = (s - 1) / 2.0
        m = np.array([[zoom, 0, (1 - zoom) * c + tx], [0, zoom, (1 - zoom) * c + ty]], np.float32)
        x = cv2.warpAffine(np.ascontiguousarray(x), m, (s, s), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    mean = x.mean(axis=(0, 1), keepdims=True)
    x = (x - mean) * rng.uniform(*p.contrast) + mean
    x = x * (1.0 + rng.uniform(-p.channel_gain, p.channel_gain, size=3)).astype(np.float32)
    x = x + rng.uniform(-p.brightness, p.brightness)
    return np.clip(x, -1.0, 1.0).astype(np.float32)


class Batches(keras.utils.PyDataset):
    """(x, y[, sample_weight]) batches from in-memory float tensors (N, S, S, 3).

    `y` may be a (N, k) float target (one-hot, optionally with teacher logits
    appended for distillation). `augment=True` only for the training split;
    shuffling is seeded per epoch so runs are reproducible.
    """

    def __init__(self, x, y, batch_size=64, augment: bool = False, shuffle: bool = False,
                 sample_weight=None, params: AugmentParams | None = None, seed: int = 0, **kw):
        super().__init__(**kw)
        self.x, self.y, self.sw = x, y, sample_weight
        self.batch_size, self.augment, self.shuffle = batch_size, augment, shuffle
        self.params = params or AugmentParams()
        self.seed, self.epoch_index = seed, 0
        self.order = np.arange(len(x))
        self.on_epoch_end()

    def __len__(self) -> int:
        return int(np.ceil(len(self.x) / self.batch_size))

    def on_epoch_end(self) -> None:
        if self.shuffle:
            self.order = np.random.default_rng(self.seed + self.epoch_index).permutation(len(self.x))
        self.epoch_index += 1

    def epoch(self, _e: int = 0):
        """One pass over the batches, then the next epoch's order."""
        for i in range(len(self)):
            yield self[i]
        self.on_epoch_end()

    def __getitem__(self, i):
        idx = self.order[i * self.batch_size : (i + 1) * self.batch_size]
        xb = self.x[idx]
        if self.augment:
            rng = np.random.default_rng([self.seed, self.epoch_index, i])
            xb = np.stack([augment_image(v, rng, self.params) for v in xb])
        out = (np.asarray(xb, np.float32), np.asarray(self.y[idx], np.float32))
        if self.sw is not None:
            out = out + (np.asarray(self.sw[idx], np.float32),)
        return out
