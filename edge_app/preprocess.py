"""The six-stage preprocessing shared by the device and the training module.

One implementation of each stage, in the order fixed by PAPER.md:
crop -> resize -> dehair -> denoise -> contrast -> normalize.

Every stage is a small pure function on a NumPy image. `Preprocessor` runs them
in order, times each one, and describes itself (name + version + parameters) so
that the description can go into the model manifest and every screening record.

Speed: the only stage that touches the full camera frame is `crop`, and it finds
the field of view on a thumbnail. Everything after `resize` (hair inpainting,
smoothing, CLAHE, colour constancy) runs at model resolution, so a 4000x3000
phone photo costs little more than a 200x150 dermoscopy image.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import cv2
import numpy as np

PREPROCESS_NAME = "dermaedge-six-stage"
PREPROCESS_VERSION = "2.0"  # 2.0: dehair keeps only thin, long dark structures (hair), not pigment network or blobs
STAGES = ("crop", "resize", "dehair", "denoise", "contrast", "normalize")


@dataclass(frozen=True)
class PreprocessParams:
    """Parameters of the six stages. They travel in the model manifest."""

    size: int = 128
    # crop: pixels darker than this (grey, 0..255) count as vignette / border
    crop_dark_threshold: int = 25
    # crop: a row/column belongs to the field of view if this share of it is bright
    crop_min_fraction: float = 0.25
    # dehair: black-hat kernel as a fraction of the model size (scale-free) finds thin dark candidates;
    # only pieces that are long (fraction of the side), thin (mean width, px) and not a mesh (few small holes) are hair
    dehair_kernel_fraction: float = 0.07
    dehair_threshold: int = 30
    dehair_min_length_fraction: float = 0.2
    dehair_max_width: float = 3.0
    dehair_max_small_holes: int = 2
    dehair_inpaint_radius: int = 2
    # denoise: bilateral filter (edge preserving)
    denoise_diameter: int = 5
    denoise_sigma_color: float = 20.0
    denoise_sigma_space: float = 3.0
    # contrast: CLAHE on L of LAB
    clahe_clip_limit: float = 1.5
    clahe_tile_grid: int = 4
    # normalize: Shades of Grey Minkowski norm, then (x - 127) / 128 in RGB order
    shades_of_grey_power: int = 6
    disabled_stages: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        unknown = set(self.disabled_stages) - set(STAGES)
        if unknown:
            raise ValueError(f"unknown preprocessing stages to disable: {sorted(unknown)}")
        if "resize" in self.disabled_stages:
            raise ValueError("the resize stage cannot be disabled: the model needs its input size")
        if self.size < 16:
            raise ValueError(f"model input size must be at least 16 px, got {self.size}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["disabled_stages"] = list(self.disabled_stages)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PreprocessParams:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown preprocessing parameters: {sorted(unknown)}")
        d = dict(d)
        d["disabled_stages"] = tuple(d.get("disabled_stages", ()))
        return cls(**d)


# --------------------------------------------------------------------------- stages


def crop(image: np.ndarray, dark_threshold: int = 25, min_fraction: float = 0.25) -> np.ndarray:
    """Remove the dark dermatoscope vignette / black borders, then take the central
    square around the field of view.

    The field of view is found on a strided thumbnail (about 256 px) so the cost
    does not grow with the camera resolution; the box is then mapped back.
    """
    top, left, side = crop_box(image, dark_threshold, min_fraction)
    return image[top : top + side, left : left + side]


def crop_box(image: np.ndarray, dark_threshold: int = 25, min_fraction: float = 0.25) -> tuple[int, int, int]:
    """(top, left, side) of the square `crop` keeps (the heatmap is drawn over it)."""
    h, w = image.shape[:2]
    step = max(1, max(h, w) // 256)  # strided thumbnail: O(256^2) whatever the frame size
    thumb = image[::step, ::step]
    grey = cv2.cvtColor(np.ascontiguousarray(thumb), cv2.COLOR_BGR2GRAY)
    bright = grey > dark_threshold
    rows = np.flatnonzero(bright.mean(axis=1) >= min_fraction)
    cols = np.flatnonzero(bright.mean(axis=0) >= min_fraction)
    if rows.size == 0 or cols.size == 0:
        y0, y1, x0, x1 = 0, h, 0, w  # all dark: keep the frame, the quality gate flags it
    else:
        y0, y1 = int(rows[0]) * step, min(h, (int(rows[-1]) + 1) * step)
        x0, x1 = int(cols[0]) * step, min(w, (int(cols[-1]) + 1) * step)
    side = max(1, min(y1 - y0, x1 - x0))
    cy, cx = (y0 + y1) // 2, (x0 + x1) // 2
    top = int(np.clip(cy - side // 2, 0, h - side))
    left = int(np.clip(cx - side // 2, 0, w - side))
    return top, left, side


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """Resize to `size` x `size`: area interpolation when shrinking, cubic when growing."""
    interp = cv2.INTER_AREA if min(image.shape[:2]) >= size else cv2.INTER_CUBIC
    return cv2.resize(image, (size, size), interpolation=interp)


def hair_mask(image: np.ndarray, kernel_fraction: float = 0.07, threshold: int = 30, min_length_fraction: float = 0.2,
              max_width: float = 3.0, max_small_holes: int = 2) -> np.ndarray:
    """Pixels of hair: thin dark structures (black-hat) whose connected piece is long, thin and not a mesh.

    A black-hat alone also fires on pigment network, globules, dots and dark lesion
    borders, which are what a melanoma is recognised by. Hair differs by shape, so
    each connected piece of the black-hat mask is kept only if it spans at least
    `min_length_fraction` x side, its mean width (2 x area / perimeter) is at most
    `max_width` px, and it encloses at most `max_small_holes` holes the size of a
    network cell (a pigment network is a mesh of small cells; crossing hairs
    enclose few, large ones). Dots and globules are too short, blobs too thick; a
    hair that touches a network stays (the conservative side: lesion kept).
    """
    side = image.shape[0]
    k = max(3, round(side * kernel_fraction) | 1)
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    blackhat = cv2.morphologyEx(grey, cv2.MORPH_BLACKHAT, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    candidates = (blackhat > threshold).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(candidates, connectivity=8)
    min_length = side * min_length_fraction
    mask = np.zeros_like(candidates)
    for i in range(1, n):
        x, y, w, h, area = (int(v) for v in stats[i])
        if np.hypot(w, h) < min_length:  # a dot, globule or short segment
            continue
        piece = (labels[y : y + h, x : x + w] == i).astype(np.uint8)
        if _is_hair(piece, area, min_length, max_width, max_small_holes):
            mask[y : y + h, x : x + w] |= piece
    return mask


def _is_hair(piece: np.ndarray, area: int, min_length: float, max_width: float, max_small_holes: int) -> bool:
    contours, hierarchy = cv2.findContours(np.pad(piece, 1), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    (_, _), (rw, rh), _ = cv2.minAreaRect(np.vstack(contours))
    if max(rw, rh) + 1.0 < min_length:
        return False
    perimeter = sum(cv2.arcLength(c, True) for c in contours)
    if 2.0 * area / max(perimeter, 1.0) > max_width:
        return False
    holes = [c for c, hier in zip(contours, hierarchy[0]) if hier[3] >= 0]
    # mesh cells: holes of a few px up to about half the span across; 1-2 px holes are where two digital lines cross
    small = sum(1 for c in holes if 6.0 <= cv2.contourArea(c) < (min_length / 2.0) ** 2)
    return small <= max_small_holes


def dehair(image: np.ndarray, kernel_fraction: float = 0.07, threshold: int = 30, inpaint_radius: int = 2,
           min_length_fraction: float = 0.2, max_width: float = 3.0, max_small_holes: int = 2) -> np.ndarray:
    """Hair removal: hair mask (dark, thin, long, not a mesh), widened by a pixel for the soft edge, inpainted (Telea).

    Images without hair are returned unchanged.
    """
    mask = hair_mask(image, kernel_fraction, threshold, min_length_fraction, max_width, max_small_holes)
    if not mask.any():
        return image
    mask = cv2.dilate(mask, np.ones((3, 3), np.uint8)) * 255
    return cv2.inpaint(image, mask, inpaint_radius, cv2.INPAINT_TELEA)


def denoise(image: np.ndarray, diameter: int = 5, sigma_color: float = 20.0, sigma_space: float = 3.0) -> np.ndarray:
    """Light edge-preserving smoothing (bilateral filter)."""
    return cv2.bilateralFilter(image, diameter, sigma_color, sigma_space)


def contrast(image: np.ndarray, clip_limit: float = 1.5, tile_grid: int = 4) -> np.ndarray:
    """CLAHE on the lightness channel of LAB; colour is left alone."""
    lab = cv2.cvtColor(image, cv2.COLOR_BGR2LAB)
    clahe = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(tile_grid, tile_grid))
    lab[..., 0] = clahe.apply(np.ascontiguousarray(lab[..., 0]))
    return cv2.cvtColor(lab, cv2.COLOR_LAB2BGR)


def shades_of_grey(image: np.ndarray, power: int = 6) -> np.ndarray:
    """Colour constancy (Shades of Grey, Finlayson 2004): scale each channel so the
    Minkowski p-norm illuminant estimate becomes neutral grey. Float32 out."""
    img = image.astype(np.float32)
    illuminant = np.power(np.mean(np.power(img, power), axis=(0, 1)), 1.0 / power)
    illuminant = np.maximum(illuminant, 1e-6)
    gain = illuminant.mean() / illuminant
    return np.clip(img * gain, 0.0, 255.0)


def normalize(image: np.ndarray, power: int = 6, colour_constancy: bool = True) -> np.ndarray:
    """Colour constancy, BGR -> RGB, scale to the model's range (x - 127) / 128.

    The range is the one the ImageNet EfficientNet-Lite weights were trained with.
    """
    img = shades_of_grey(image, power) if colour_constancy else image.astype(np.float32)
    rgb = img[..., ::-1]
    return np.ascontiguousarray((rgb - 127.0) / 128.0, dtype=np.float32)


def to_model_range(bgr: np.ndarray) -> np.ndarray:
    """Scaling only (no colour constancy): for tensors built outside the pipeline."""
    return normalize(bgr, colour_constancy=False)


# --------------------------------------------------------------------------- pipeline


@dataclass
class PreprocessResult:
    tensor: np.ndarray  # float32 (size, size, 3), RGB, model range
    timings_ms: dict[str, float] = field(default_factory=dict)
    model_image: np.ndarray | None = None  # BGR uint8 at model size, after `contrast`
    crop_box: tuple[int, int, int] | None = None  # (top, left, side) the crop stage kept; None when it is off


class Preprocessor:
    """Runs the six stages in order and times each one."""

    name = PREPROCESS_NAME
    version = PREPROCESS_VERSION

    def __init__(self, params: PreprocessParams | None = None) -> None:
        self.params = params or PreprocessParams()

    @classmethod
    def from_description(cls, description: dict[str, Any]) -> Preprocessor:
        """Build from a manifest's `preprocessing` block, refusing another version."""
        name, version = description.get("name"), description.get("version")
        if name != PREPROCESS_NAME or version != PREPROCESS_VERSION:
            raise ValueError(
                f"the model was trained with preprocessing {name!r} version {version!r}, "
                f"but this device runs {PREPROCESS_NAME!r} version {PREPROCESS_VERSION!r}: "
                "re-export the model with this code, or install the edge-app version it was trained with"
            )
        return cls(PreprocessParams.from_dict(description.get("params", {})))

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "params": self.params.to_dict()}

    def with_disabled(self, *stages: str) -> Preprocessor:
        return Preprocessor(replace(self.params, disabled_stages=tuple(stages)))

    def stage(self, name: str, image: np.ndarray) -> np.ndarray:
        """One stage by name, with this pipeline's parameters."""
        p = self.params
        if name == "crop":
            return crop(image, p.crop_dark_threshold, p.crop_min_fraction)
        if name == "resize":
            return resize(image, p.size)
        if name == "dehair":
            return dehair(image, p.dehair_kernel_fraction, p.dehair_threshold, p.dehair_inpaint_radius,
                          p.dehair_min_length_fraction, p.dehair_max_width, p.dehair_max_small_holes)
        if name == "denoise":
            return denoise(image, p.denoise_diameter, p.denoise_sigma_color, p.denoise_sigma_space)
        if name == "contrast":
            return contrast(image, p.clahe_clip_limit, p.clahe_tile_grid)
        if name == "normalize":
            return normalize(image, p.shades_of_grey_power, colour_constancy=True)
        raise KeyError(name)

    def run(self, image: np.ndarray) -> PreprocessResult:
        """BGR uint8 image of any size -> model tensor, with per-stage timings (ms)."""
        check_bgr_image(image)
        timings: dict[str, float] = {}
        current = image
        model_image = box = None
        for stage in STAGES:
            start = time.perf_counter()
            if stage == "normalize":
                model_image = current
            if stage == "normalize" and "normalize" in self.params.disabled_stages:
                current = to_model_range(current)
            elif stage == "crop" and "crop" not in self.params.disabled_stages:
                box = crop_box(current, self.params.crop_dark_threshold, self.params.crop_min_fraction)
                current = current[box[0] : box[0] + box[2], box[1] : box[1] + box[2]]
            elif stage not in self.params.disabled_stages:
                current = self.stage(stage, current)
            timings[stage] = (time.perf_counter() - start) * 1000.0
        return PreprocessResult(tensor=current, timings_ms=timings, model_image=model_image, crop_box=box)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return self.run(image).tensor

    def stage_outputs(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """RGB uint8 picture after each stage (for looking at what each stage does; normalize shown rescaled)."""
        check_bgr_image(image)
        out: dict[str, np.ndarray] = {}
        current = image
        for stage in STAGES:
            if stage == "normalize":
                rgb = to_model_range(current) if stage in self.params.disabled_stages else self.stage(stage, current)
                out[stage] = np.clip(rgb * 128.0 + 127.0, 0, 255).astype(np.uint8)
                continue
            if stage not in self.params.disabled_stages:
                current = self.stage(stage, current)
            out[stage] = cv2.cvtColor(current, cv2.COLOR_BGR2RGB)
        return out


def check_bgr_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", None)
        raise ValueError(f"expected a BGR uint8 image of shape (H, W, 3), got shape {shape} dtype {dtype}")
    if min(image.shape[:2]) < 8:
        raise ValueError(f"image is too small to screen: {image.shape[1]}x{image.shape[0]} px")
