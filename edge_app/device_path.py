"""The one device path: image bytes (or a camera frame) -> screening result.

    decode (pixel cap, EXIF, DCT-scaled to what the model needs, one colour conversion)
      -> quality gate on the scaled image -> six preprocessing stages -> TFLite runtime (+ scope check)
      -> decision (`decisions.decide`: probability at the threshold in force, unless a gate refuses)

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
from typing import Any

import numpy as np

from .decisions import Decision, Threshold, decide
from .images import DEFAULT_MAX_PIXELS, ImageDecodeError, decode, read_file, reduce_to
from .preprocess import Preprocessor, check_bgr_image
from .quality import QualityReport, assess
from .runtime import Classification, Classifier

Transform = Callable[[np.ndarray], np.ndarray]


@dataclass
class DeviceResult:
    """One screening through the device path."""

    classification: Classification  # probabilities, scope, timings (decode, quality, stages, inference, total)
    quality: QualityReport
    threshold: Threshold  # the threshold the decision was made at
    decision: Decision
    image: np.ndarray | None  # the scaled BGR image that was analysed (what the quality gate and the stages saw);
    # None in `screen_files`' results, which keep no images
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

    def to_dict(self) -> dict[str, Any]:
        """The classification, the threshold in force, the decision and the quality gate's flags, as
        `edge-app classify --json` prints them and a record stores them."""
        return (self.classification.to_dict() | {"threshold": self.threshold.value, "threshold_source": self.threshold.source}
                | self.decision.to_dict() | {"quality_flags": list(self.quality.flags)})


def screen_image(clf: Classifier, image_bgr: np.ndarray, *, threshold: Threshold | None = None,
                 preprocessor: Preprocessor | None = None, timings: dict[str, float] | None = None,
                 explain: bool = False) -> DeviceResult:
    """BGR uint8 frame -> result with its decision at `threshold` (default: the model's own). A frame larger
    than the model needs is first shrunk (`images.reduce_to`, as a JPEG's scaled decode would). `timings`:
    steps already spent on this image (e.g. `decode`); they count into `total`."""
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
    threshold = threshold or clf.model_threshold()
    decision = decide(result.malignant_probability, threshold.value, result.in_scope, quality.flags)
    return DeviceResult(result, quality, threshold, decision, image, width, height, "array")


def screen_bytes(clf: Classifier, data: bytes, *, threshold: Threshold | None = None,
                 preprocessor: Preprocessor | None = None, transform: Transform | None = None,
                 max_pixels: int | None = None, explain: bool = False) -> DeviceResult:
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
    result = screen_image(clf, image, threshold=threshold, preprocessor=preprocessor, timings=timings, explain=explain)
    result.width, result.height, result.format = decoded.width, decoded.height, decoded.format
    return result


def screen_file(clf: Classifier, path: str | Path, *, threshold: Threshold | None = None,
                preprocessor: Preprocessor | None = None, transform: Transform | None = None,
                max_pixels: int | None = None) -> DeviceResult:
    """An image file -> result; an unreadable path raises ImageDecodeError."""
    return screen_bytes(clf, read_file(path), threshold=threshold, preprocessor=preprocessor, transform=transform,
                        max_pixels=max_pixels)


def screen_files(clf: Classifier, root: Path, files: Sequence[str], *, threshold: Threshold | None = None,
                 preprocessor: Preprocessor | None = None, transform: Transform | None = None,
                 desc: str = "") -> tuple[list[DeviceResult], list[int], list[str]]:
    """Each readable file under `root`: (its result: probability, scope, quality, decision; indices of the
    files read; one "file: reason" line per unreadable file). A progress bar on a terminal. The results
    keep no images, so memory stays flat over a whole dataset."""
    from tqdm import tqdm

    results: list[DeviceResult] = []
    kept: list[int] = []
    errors: list[str] = []
    for i, file in enumerate(tqdm(files, desc=desc or None, unit="img", disable=None, file=sys.stderr, mininterval=1.0)):
        try:
            result = screen_file(clf, Path(root) / file, threshold=threshold, preprocessor=preprocessor,
                                 transform=transform)
        except (ImageDecodeError, ValueError) as exc:
            errors.append(f"{file}: {exc}")
            continue
        result.image = None
        results.append(result)
        kept.append(i)
    return results, kept, errors
