"""Image shifts: the ways one dermatoscope's picture differs from another's, on a decoded BGR uint8 image.

One implementation serves both users: `device_augment.augment_raw` draws them at random for training, and
`SHIFTS` names fixed ones for the robustness table of the evaluation (and the scope-check benchmarks).
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from ..images import decode_image, encode_jpeg

Shift = Callable[[np.ndarray], np.ndarray]


def crop(im: np.ndarray, frac: float, y0: int | None = None, x0: int | None = None) -> np.ndarray:
    """A tighter field of view: `frac` of each side kept, from (y0, x0) (default: centred)."""
    h, w = im.shape[:2]
    ch, cw = max(8, round(h * frac)), max(8, round(w * frac))
    y0 = (h - ch) // 2 if y0 is None else y0
    x0 = (w - cw) // 2 if x0 is None else x0
    return im[y0 : y0 + ch, x0 : x0 + cw]


def pad(im: np.ndarray, frac: float) -> np.ndarray:
    """A looser field of view: a border of mirrored skin, `frac` of the side on each edge."""
    h, w = im.shape[:2]
    py, px = round(h * frac), round(w * frac)
    return cv2.copyMakeBorder(im, py, py, px, px, cv2.BORDER_REFLECT_101)


def resize(im: np.ndarray, fx: float, fy: float | None = None, interpolation: int | None = None) -> np.ndarray:
    """Scale by fx (width) and fy (height, default fx); fx != fy squashes. Default filter: cubic up, area down."""
    fy = fx if fy is None else fy
    h, w = im.shape[:2]
    if interpolation is None:
        interpolation = cv2.INTER_CUBIC if fx * fy > 1 else cv2.INTER_AREA
    size = (min(2400, max(8, round(w * fx))), min(2400, max(8, round(h * fy))))
    return cv2.resize(im, size, interpolation=interpolation)


def blur(im: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(im, (0, 0), sigma)


def sharpen(im: np.ndarray, amount: float, sigma: float = 2.0) -> np.ndarray:
    """Unsharp mask."""
    return cv2.addWeighted(im, 1 + amount, cv2.GaussianBlur(im, (0, 0), sigma), -amount, 0)


def colour(im: np.ndarray, gains_bgr: tuple[float, float, float] = (1.0, 1.0, 1.0), gamma: float = 1.0,
           fall: np.ndarray | None = None) -> np.ndarray:
    """White balance (a per-channel gain), gamma, then a light fall-off map (H, W) in 0..1, in one rounding."""
    x = np.clip(im.astype(np.float32) / 255.0 * np.asarray(gains_bgr, np.float32), 0.0, 1.0)
    if gamma != 1.0:
        x = np.power(x, np.float32(gamma))
    if fall is not None:
        x *= fall[..., None]
    return np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8)


def radius(shape: tuple[int, ...]) -> np.ndarray:
    """Distance from the centre, 1 at the middle of each edge."""
    h, w = shape[:2]
    yy, xx = np.ogrid[:h, :w]
    return np.sqrt(((yy - h / 2) / (h / 2)) ** 2 + ((xx - w / 2) / (w / 2)) ** 2)


def vignette_fall(shape: tuple[int, ...], strength: float) -> np.ndarray:
    """A soft radial fall-off: 1 - strength * r^2."""
    return np.clip(1.0 - strength * radius(shape) ** 2, 0, 1)


def ring_fall(shape: tuple[int, ...], edge: float) -> np.ndarray:
    """The black ring of a contact dermatoscope: dark beyond radius `edge`."""
    return (radius(shape) <= edge).astype(np.float32)


def vignette(im: np.ndarray, strength: float = 0.45) -> np.ndarray:
    return colour(im, fall=vignette_fall(im.shape, strength))


def jpeg(im: np.ndarray, quality: int) -> np.ndarray:
    """Recompression, decoded the way the device decodes uploads."""
    return decode_image(encode_jpeg(im, quality))


SHIFTS: dict[str, Shift] = {
    "upscale_x2": lambda im: resize(im, 2.0),
    "upscale_x3": lambda im: resize(im, 3.0),
    "downscale_x0.5": lambda im: resize(im, 0.5),
    "nearest_resample_x2": lambda im: resize(im, 2.0, interpolation=cv2.INTER_NEAREST),
    "squash_aspect_0.75": lambda im: resize(im, 0.75, 1.0, cv2.INTER_AREA),
    "tighter_crop_70pct": lambda im: crop(im, 0.70),
    "looser_crop_pad20pct": lambda im: pad(im, 0.20),
    "blur_sigma1.5": lambda im: blur(im, 1.5),
    "sharpen": lambda im: sharpen(im, 1.0),
    "jpeg_q40": lambda im: jpeg(im, 40),
    "jpeg_q50": lambda im: jpeg(im, 50),
    "colour_cast_warm": lambda im: colour(im, (0.85, 1.0, 1.15)),
    "colour_cast_cool": lambda im: colour(im, (1.15, 1.0, 0.85)),
    "gamma_0.75": lambda im: colour(im, gamma=0.75),
    "gamma_1.35": lambda im: colour(im, gamma=1.35),
    "vignette": vignette,
}
