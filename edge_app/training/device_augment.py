"""Augmentation of what differs between dermatoscopes and cameras, applied to the decoded
image *before* the device pipeline (so the model learns through the same six stages).

Only the training split is augmented; splits are made first. Each op mimics one way a
device differs: scale (0.5x-3x, random resampling filter), aspect squash, blur or
sharpening, JPEG quality 40-95 decoded like an upload, white balance and gamma,
vignette (soft or a black dermatoscope ring), tighter or looser framing. The ops themselves
are `shifts` (shared with the evaluation's robustness table).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from . import shifts

FILTERS = (cv2.INTER_NEAREST, cv2.INTER_LINEAR, cv2.INTER_CUBIC, cv2.INTER_AREA, cv2.INTER_LANCZOS4)


@dataclass(frozen=True)
class DeviceAugmentParams:
    scale: tuple[float, float] = (0.5, 3.0)
    squash: float = 0.25  # one axis scaled by up to 1 +- this
    p_blur: float = 0.3
    p_sharpen: float = 0.2
    jpeg_quality: tuple[int, int] = (40, 95)
    p_jpeg: float = 0.5
    wb_gain: float = 0.15  # per-channel gain 1 +- this
    gamma: tuple[float, float] = (0.75, 1.35)
    p_vignette: float = 0.3
    framing: tuple[float, float] = (0.6, 1.3)  # < 1: tighter crop (central share), > 1: looser (mirrored border)


def augment_raw(image: np.ndarray, rng: np.random.Generator, p: DeviceAugmentParams = DeviceAugmentParams()) -> np.ndarray:
    """One BGR uint8 image -> a copy as another device might have taken it (the ops of `shifts`, drawn at random)."""
    im = image
    f = float(rng.uniform(*p.framing))
    if f < 1.0:
        h, w = im.shape[:2]
        ch, cw = max(8, round(h * f)), max(8, round(w * f))
        im = shifts.crop(im, f, int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1)))
    elif f > 1.0:
        im = shifts.pad(im, (f - 1) / 2)
    s = float(np.exp(rng.uniform(np.log(p.scale[0]), np.log(p.scale[1]))))
    q = 1.0 + float(rng.uniform(-p.squash, p.squash))
    sx, sy = (s * q, s) if rng.random() < 0.5 else (s, s * q)
    im = shifts.resize(im, sx, sy, FILTERS[int(rng.integers(len(FILTERS)))])
    r = rng.random()
    if r < p.p_blur:
        im = shifts.blur(im, float(rng.uniform(0.5, 2.0)) * max(1.0, min(im.shape[:2]) / 300))
    elif r < p.p_blur + p.p_sharpen:
        sigma = float(rng.uniform(1.0, 2.5))
        im = shifts.sharpen(im, float(rng.uniform(0.3, 1.2)), sigma)
    gains = tuple(float(g) for g in 1.0 + rng.uniform(-p.wb_gain, p.wb_gain, 3))
    gamma = float(rng.uniform(*p.gamma))
    fall = None
    if rng.random() < p.p_vignette:  # a soft radial fall-off, or the black ring of a contact dermatoscope
        if rng.random() < 0.5:
            fall = shifts.vignette_fall(im.shape, float(rng.uniform(0.2, 0.6)))
        else:
            fall = shifts.ring_fall(im.shape, float(rng.uniform(0.95, 1.3)))
    im = shifts.colour(im, gains, gamma, fall)
    if rng.random() < p.p_jpeg:
        im = shifts.jpeg(im, int(rng.integers(p.jpeg_quality[0], p.jpeg_quality[1] + 1)))
    return im
