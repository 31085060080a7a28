"""Decoding untrusted image bytes into BGR uint8 frames, safely.

Used by every entry point that takes a file (CLI, upload, image-folder camera).
The pixel count is checked from the header *before* decoding (decompression
bombs), EXIF orientation is honoured (phone photos), and grey / RGBA / palette /
16-bit images are converted to 8-bit BGR.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 50_000_000  # 50 MP: above any phone or dermatoscope camera


class ImageDecodeError(ValueError):
    """The bytes are not an image this device can screen. The message says why."""


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int | None = None) -> np.ndarray:
    """Image file bytes -> BGR uint8 array (H, W, 3).

    `min_side`: the caller needs only this many pixels on the short side, so a
    JPEG may be decoded at 1/2, 1/4 or 1/8 scale in the DCT (libjpeg "draft"
    mode). A 12 MP camera JPEG then decodes in a fraction of the time; the
    screening pipeline shrinks it to model size anyway.
    """
    if not data:
        raise ImageDecodeError("the file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            width, height = img.size
            if width * height > max_pixels:
                raise ImageDecodeError(
                    f"image is {width}x{height} = {width * height / 1e6:.0f} MP, above the "
                    f"{max_pixels / 1e6:.0f} MP limit; resize it before uploading"
                )
            if min_side and img.format == "JPEG" and min(width, height) > 2 * min_side:
                scale = min_side / min(width, height)
                img.draft("RGB", (max(1, int(width * scale)), max(1, int(height * scale))))
            img.load()
    except ImageDecodeError:
        raise
    except UnidentifiedImageError:
        raise ImageDecodeError("not a recognised image format (expected JPEG or PNG)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageDecodeError("image declares an implausibly large size (decompression bomb); rejected") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError(f"image data is corrupt or truncated ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - Pillow plugins raise many kinds; report, never crash
        raise ImageDecodeError(f"image could not be decoded ({type(exc).__name__}: {exc})") from None
    return _to_bgr(ImageOps.exif_transpose(img))


def read_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int | None = None) -> np.ndarray:
    """Read and decode a file; unreadable files raise ImageDecodeError."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ImageDecodeError(f"cannot read {path}: {exc.strerror or exc}") from None
    return decode_image(data, max_pixels, min_side)


def _to_bgr(img: Image.Image) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        grey = np.clip(arr / peak * 255.0, 0, 255).astype(np.uint8)
        rgb = np.repeat(grey[..., None], 3, axis=2)
    elif img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        span = max(float(arr.max() - arr.min()), 1e-9)
        grey = ((arr - arr.min()) / span * 255.0).astype(np.uint8)
        rgb = np.repeat(grey[..., None], 3, axis=2)
    else:
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            rgba = img.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            img = Image.alpha_composite(background, rgba)
        rgb = np.asarray(img.convert("RGB"), dtype=np.uint8)
    return np.ascontiguousarray(rgb[..., ::-1])


def encode_jpeg(bgr: np.ndarray, quality: int = 92) -> bytes:
    """BGR uint8 -> JPEG bytes (used for captured frames and previews)."""
    import cv2

    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()
