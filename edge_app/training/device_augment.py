"""Augmentation of what differs between dermatoscopes and cameras, applied to the decoded
image *before* the device pipeline (so the model learns through the same six stages).

Only the training split is augmented; splits are made first. Each op mimics one way a
device differs: scale (0.5x-3x, random resampling filter), aspect squash, blur or
sharpening, JPEG quality 40-95 decoded like an upload, white balance and gamma,
vignette (soft or a black dermatoscope ring), tighter or looser framing.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..images import decode_image, encode_jpeg

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
    """One BGR uint8 image -> a copy as another device might have taken it."""
    im = image
    h, w = im.shape[:2]
    # framing
    f = float(rng.uniform(*p.framing))
    if f < 1.0:
        ch, cw = max(8, round(h * f)), max(8, round(w * f))
        y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        im = im[y0 : y0 + ch, x0 : x0 + cw]
    elif f > 1.0:
        py, px = round(h * (f - 1) / 2), round(w * (f - 1) / 2)
        im = cv2.copyMakeBorder(im, py, py, px, px, cv2.BORDER_REFLECT_101)
    # scale + squash, with a random resampling filter
    s = float(np.exp(rng.uniform(np.log(p.scale[0]), np.log(p.scale[1]))))
    q = 1.0 + float(rng.uniform(-p.squash, p.squash))
    sx, sy = (s * q, s) if rng.random() < 0.5 else (s, s * q)
    h, w = im.shape[:2]
    nw, nh = max(16, round(w * sx)), max(16, round(h * sy))
    nw, nh = min(nw, 2400), min(nh, 2400)
    im = cv2.resize(im, (nw, nh), interpolation=FILTERS[int(rng.integers(len(FILTERS)))])
    # optics: blur or sharpening
    r = rng.random()
    if r < p.p_blur:
        im = cv2.GaussianBlur(im, (0, 0), float(rng.uniform(0.5, 2.0)) * max(1.0, min(nw, nh) / 300))
    elif r < p.p_blur + p.p_sharpen:
        blurred = cv2.GaussianBlur(im, (0, 0), float(rng.uniform(1.0, 2.5)))
        a = float(rng.uniform(0.3, 1.2))
        im = cv2.addWeighted(im, 1 + a, blurred, -a, 0)
    # colour: white balance + gamma
    img = im.astype(np.float32) / 255.0
    img *= (1.0 + rng.uniform(-p.wb_gain, p.wb_gain, 3)).astype(np.float32)
    img = np.power(np.clip(img, 0, 1), float(rng.uniform(*p.gamma)))
    # vignette: a soft radial fall-off, or the black ring of a contact dermatoscope
    if rng.random() < p.p_vignette:
        hh, ww = img.shape[:2]
        yy, xx = np.ogrid[:hh, :ww]
        d = np.sqrt(((yy - hh / 2) / (hh / 2)) ** 2 + ((xx - ww / 2) / (ww / 2)) ** 2)
        if rng.random() < 0.5:
            img *= np.clip(1.0 - float(rng.uniform(0.2, 0.6)) * d**2, 0, 1)[..., None]
        else:
            img[d > float(rng.uniform(0.95, 1.3))] = 0.0
    im = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if rng.random() < p.p_jpeg:
        im = decode_image(encode_jpeg(im, int(rng.integers(p.jpeg_quality[0], p.jpeg_quality[1] + 1))))
    return im
