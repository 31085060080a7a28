"""Screen-size renditions of stored screening images.

Every record's image is stored as it came (an upload's own bytes, a camera frame's
JPEG). Screens show a rendition instead: a JPEG at most `SCREEN_SIDE` px on its long
side, made once when the record is saved (from the pixels the screening already has:
a camera frame, or an upload as the device path decoded it) and kept beside the original
as `<id>.screen.jpg` (like the thumbnail `<id>.thumb.jpg`). So a browser never decodes a
12 MP original for a 376x280 box, and any accepted format (TIFF, BMP, 16-bit PNG)
displays. A record saved before renditions existed gets its rendition the first time
it is shown (`ensure`), made from the original and stored the same way.
"""

from __future__ import annotations

import io
import math
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from .fileio import write_atomic
from .images import DEFAULT_MAX_PIXELS, decode, encode_jpeg, shrink_to_fit
from .store.schema import SCREEN_SUFFIX

SCREEN_SIDE = 1024  # px, long side
SCREEN_QUALITY = 85

_making = threading.Lock()  # a rendition is made once, even when two viewers ask at the same moment


def rendition_path(image_path: str | Path) -> Path:
    """`images/2026-12-06/<id>.tif` -> `images/2026-12-06/<id>.screen.jpg` (relative or absolute alike)."""
    return Path(image_path).with_suffix(SCREEN_SUFFIX)


def fit(bgr: np.ndarray, side: int = SCREEN_SIDE) -> np.ndarray:
    """Shrink (never enlarge) so the long side is at most `side` px."""
    return shrink_to_fit(bgr, side, side)


def from_frame(bgr: np.ndarray) -> bytes:
    """A camera frame (BGR, full resolution) -> the rendition's JPEG bytes."""
    return encode_jpeg(fit(bgr), SCREEN_QUALITY)


def from_bytes(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> bytes:
    """An image file's bytes -> the rendition's JPEG bytes, EXIF orientation applied.

    A JPEG is decoded at the smallest DCT scale that still gives about `SCREEN_SIDE` px
    (a 12 MP photo at 1/4), so this costs a fraction of a full decode. Raises ImageDecodeError.
    """
    try:
        with Image.open(io.BytesIO(data)) as img:
            w, h = img.size
    except Exception:  # noqa: BLE001 - not an image: decode says why, in its own words
        return from_frame(decode(data, max_pixels).bgr)
    # decode's min_side is the short side it must keep; ask for the short side that goes with a long side
    # of at least 3/4 of SCREEN_SIDE so the power-of-two scaled decode lands between 768 and 1536 px.
    min_side = max(1, math.ceil(min(w, h) * SCREEN_SIDE * 0.75 / max(w, h)))
    return from_frame(decode(data, max_pixels, min_side=min_side).bgr)


def save(path: Path, jpeg: bytes) -> None:
    """Write the rendition beside its original: a temp file renamed over it, so a reader never sees half a
    file. No fsync: a rendition lost in a power cut is made again from the original on its next view."""
    write_atomic(path, jpeg, durable=False)


def ensure(original: Path, make: Callable[[], bytes] | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> Path:
    """The rendition file of a stored original, made now unless it exists: by `make` (the screening
    service, right after saving a record, from the pixels it already has) or from the original file
    (a record that predates renditions, or lost its rendition). Whoever comes first makes it; the
    other waits and finds it made.

    Raises FileNotFoundError when the original is missing, ImageDecodeError when it no longer decodes.
    """
    path = rendition_path(original)
    if path.is_file():
        return path
    with _making:
        if not path.is_file():
            save(path, make() if make is not None else from_bytes(original.read_bytes(), max_pixels))
    return path
