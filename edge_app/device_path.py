"""The one device path: image bytes (or a camera frame) -> screening result.

    decode (pixel cap, EXIF, DCT-scaled to what the model needs, one colour conversion)
      -> quality gate on the scaled image -> six preprocessing stages -> TFLite runtime

The app's upload and capture, `edge-app classify|evaluate`, `edge-bench` and the
training module's device-path evaluation all call these functions, so a number
measured by one of them holds for the others. It sits below the CLI and the web
layer and imports neither.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .images import DEFAULT_MAX_PIXELS, ImageDecodeError, decode, read_file, reduce_to
from .preprocess import Preprocessor, check_bgr_image
from .quality import QualityReport, assess
from .runtime import Classification, Classifier

Transform = Callable[[np.ndarray], np.ndarray]


@dataclass
class DeviceResult:
    """One screening through the device path."""

    classification: Classification  # probabilities, decision, timings (decode, quality, stages, inference, total)
    quality: QualityReport
    image: np.ndarray  # the scaled BGR image that was analysed (what the quality gate and the stages saw)
    width: int  # the input's own size (file after EXIF orientation, or camera frame)
    height: int
    format: str  # "JPEG", "PNG", ... for files; "array" for camera frames

    @property
    def probability(self) -> float:
        """P(malignant)."""
        return self.classification.malignant_probability

    @property
    def timings_ms(self) -> dict[str, float]:
        return self.classification.timings_ms


def screen_image(clf: Classifier, image_bgr: np.ndarray, *, preprocessor: Preprocessor | None = None,
                 timings: dict[str, float] | None = None, explain: bool = False) -> DeviceResult:
    """BGR uint8 frame -> result. A frame larger than the model needs is first shrunk
    (`images.reduce_to`, as a JPEG's scaled decode would). `timings`: steps already
    spent on this image (e.g. `decode`); they count into `total`."""
    start = time.perf_counter()
    check_bgr_image(image_bgr)
    height, width = image_bgr.shape[:2]
    image = reduce_to(image_bgr, clf.decode_min_side)
    spent = dict(timings or {})
    if image is not image_bgr:
        spent["scale"] = (time.perf_counter() - start) * 1000.0
    t0 = time.perf_counter()
    quality = assess(image)
    spent["quality"] = (time.perf_counter() - t0) * 1000.0
    result = clf.classify(image, preprocessor=preprocessor, explain=explain)
    stages = {k: v for k, v in result.timings_ms.items() if k != "total"}
    elapsed = (time.perf_counter() - start) * 1000.0
    result.timings_ms = {k: round(v, 3) for k, v in (spent | stages).items()}
    result.timings_ms["total"] = round(sum((timings or {}).values()) + elapsed, 3)
    return DeviceResult(result, quality, image, width, height, "array")


def screen_bytes(clf: Classifier, data: bytes, *, preprocessor: Preprocessor | None = None,
                 transform: Transform | None = None, max_pixels: int | None = None, explain: bool = False) -> DeviceResult:
    """Image file bytes -> result. `transform` (BGR -> BGR) is applied to the decoded
    image before the quality gate (robustness checks). Raises ImageDecodeError."""
    t0 = time.perf_counter()
    decoded = decode(data, max_pixels or DEFAULT_MAX_PIXELS, min_side=clf.decode_min_side)
    timings = {"decode": (time.perf_counter() - t0) * 1000.0}
    image = decoded.bgr
    if transform is not None:
        t1 = time.perf_counter()
        image = transform(image)
        timings["transform"] = (time.perf_counter() - t1) * 1000.0
    result = screen_image(clf, image, preprocessor=preprocessor, timings=timings, explain=explain)
    result.width, result.height, result.format = decoded.width, decoded.height, decoded.format
    return result


def screen_file(clf: Classifier, path: str | Path, *, preprocessor: Preprocessor | None = None,
                transform: Transform | None = None, max_pixels: int | None = None) -> DeviceResult:
    """An image file -> result; an unreadable path raises ImageDecodeError."""
    return screen_bytes(clf, read_file(path), preprocessor=preprocessor, transform=transform, max_pixels=max_pixels)


def screen_files(clf: Classifier, root: Path, files: Sequence[str], *, preprocessor: Preprocessor | None = None,
                 transform: Transform | None = None, desc: str = "") -> tuple[list[Classification], list[int], list[str]]:
    """Each readable file under `root`: (its Classification: probability, scope, decision; indices of the
    files read; one "file: reason" line per unreadable file). A progress bar on a terminal. Only the
    classifications are kept, not the images, so memory stays flat over a whole dataset."""
    from tqdm import tqdm

    results: list[Classification] = []
    kept: list[int] = []
    errors: list[str] = []
    for i, file in enumerate(tqdm(files, desc=desc or None, unit="img", disable=None, file=sys.stderr, mininterval=1.0)):
        try:
            result = screen_file(clf, Path(root) / file, preprocessor=preprocessor, transform=transform)
        except (ImageDecodeError, ValueError) as exc:
            errors.append(f"{file}: {exc}")
            continue
        results.append(result.classification)
        kept.append(i)
    return results, kept, errors
