"""Where the model looked: a class activation map (CAM) from the student's last feature map.

The student ends in global average pooling + one dense layer, so its malignant
- benign logit is exactly the spatial mean of `features @ w + b` with
`w = W[:, malignant] - W[:, benign]`. Each cell of that map says how much that
part of the analysed square pushed the score towards malignant (positive) or
benign (negative). It is coarse (one cell per 16x16 model pixels), relative to
this image only, and it is not a lesion outline, a segmentation or a diagnosis.

NumPy + OpenCV only. The record keeps the small map and the analysed square's
position in the image (fractions); on request the device renders the map as a
small transparent PNG that the screen lays over that square of the stored image.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

OVERLAY_SIDE = 16  # px of the transparent heatmap; the browser scales it (smoothly) over the analysed square
MEANING_SHORT = ("Red raised the malignant score, blue lowered it: where the evidence came from, "
                 "not the lesion's outline or a diagnosis.")
MEANING = ("Red: parts of the analysed square that raised the malignant score; blue: parts that lowered it "
           "(relative to this image). It shows where the model's evidence came from, not the lesion's outline, "
           "and it is not a diagnosis.")


@dataclass
class CamHead:
    weights: np.ndarray  # (C,) W[:, malignant] - W[:, benign], divided by the model's temperature
    bias: float

    def cam(self, features: np.ndarray) -> np.ndarray:
        """Feature map (h, w, C) or (1, h, w, C) -> signed map (h, w) in logit units per cell."""
        f = np.asarray(features, np.float32)
        if f.ndim == 4:
            f = f[0]
        if f.ndim != 3 or f.shape[-1] != self.weights.shape[0]:
            raise ValueError(f"feature map {f.shape} does not match the CAM head ({self.weights.shape[0]} channels)")
        return f @ self.weights + np.float32(self.bias)


def crop_fraction(box: tuple[int, int, int], width: int, height: int) -> list[float]:
    """(top, left, side) in pixels -> [x0, y0, x1, y1] as fractions of the image, which stay valid
    when the stored image is shown at another size."""
    top, left, side = box
    return [round(left / width, 5), round(top / height, 5), round((left + side) / width, 5), round((top + side) / height, 5)]


def overlay(cam: np.ndarray | list, side: int = OVERLAY_SIDE, alpha: float = 0.6) -> np.ndarray:
    """Signed CAM -> a transparent BGRA square (side x side) to lay over the analysed square of the image:
    red where the evidence raised the malignant score, blue where it lowered it, opacity in proportion
    to |cell| / max |cell|. Only the map is drawn, so the cost does not grow with the camera resolution."""
    m = np.asarray(cam, np.float32)
    peak = float(np.max(np.abs(m))) or 1.0
    rel = np.clip(cv2.resize(m / peak, (side, side), interpolation=cv2.INTER_CUBIC), -1.0, 1.0)
    out = np.empty((side, side, 4), np.uint8)
    out[..., :3] = np.where(rel[..., None] >= 0, np.uint8((40, 40, 235)), np.uint8((235, 120, 30)))
    out[..., 3] = (255.0 * alpha * np.abs(rel)).astype(np.uint8)
    return out


def overlay_png(cam: np.ndarray | list, side: int = OVERLAY_SIDE) -> bytes:
    ok, buf = cv2.imencode(".png", overlay(cam, side), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()
