"""The site threshold: a decision threshold calibrated on the clinic's own dermatoscope.

`edge-app calibrate LABELS.csv --apply` writes `<data_dir>/site_threshold.json`
(threshold, the model it was calibrated for, date, the labelled set's sha256
and counts, the expected sensitivity / specificity); the app reads it and shows
which threshold is in force; `edge-app calibrate --reset` removes it, returning
to the model's own threshold. A site threshold for another model is never used.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .decisions import Threshold
from .fileio import write_atomic

SITE_FILE = "site_threshold.json"

log = logging.getLogger(__name__)


class SiteError(ValueError):
    """The site threshold file is unreadable or invalid. The message says what to do."""


@dataclass
class SiteThreshold:
    threshold: float
    model_sha256: str
    applied_at: str  # UTC, ISO 8601
    set_sha256: str  # sha256 of the labelled CSV and every image it names, in order
    labels_csv: str
    counts: dict[str, int]  # images, malignant, benign, lesions, unreadable, out_of_scope
    min_sensitivity: float
    expected: dict[str, Any] = field(default_factory=dict)  # sensitivity / specificity with 95% CIs

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def site_path(data_dir: str | Path) -> Path:
    return Path(data_dir) / SITE_FILE


def load_site(data_dir: str | Path) -> SiteThreshold | None:
    """The site threshold of this data directory, or None when there is none."""
    path = site_path(data_dir)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as exc:
        raise SiteError(f"site threshold file {path} is unreadable ({exc}); run `edge-app calibrate --reset` "
                        "or calibrate again") from None
    try:
        site = SiteThreshold(**data)
    except TypeError as exc:
        raise SiteError(f"site threshold file {path} is not valid ({exc}); run `edge-app calibrate --reset`") from None
    if not isinstance(site.threshold, (int, float)) or not 0.0 <= float(site.threshold) <= 1.0:
        raise SiteError(f"site threshold file {path}: threshold {site.threshold!r} is not a probability")
    return site


def save_site(data_dir: str | Path, site: SiteThreshold) -> Path:
    path = site_path(data_dir)
    write_atomic(path, (json.dumps(site.to_dict(), indent=2) + "\n").encode())
    return path


def reset_site(data_dir: str | Path) -> bool:
    """Remove the site threshold; True when there was one."""
    path = site_path(data_dir)
    existed = path.is_file()
    path.unlink(missing_ok=True)
    return existed


class SiteWatcher:
    """The threshold in force for the serving classifier: the site's `<data_dir>/site_threshold.json`
    when it was calibrated for that model, else the model's own. Re-read when the file changes or
    another model comes into force (a stat per screening), so `calibrate --apply` / `--reset` and
    model updates take effect without a restart. An invalid file, or one calibrated for another
    model, leaves the model's own threshold in force and is reported in `problem`."""

    def __init__(self, data_dir: str | Path) -> None:
        self.path = site_path(data_dir)
        self.data_dir = Path(data_dir)
        self.problem: str | None = None
        self.site: SiteThreshold | None = None  # the site threshold in force, if any
        self._seen: tuple[Any, Any] | None = None  # (file stamp, classifier) last applied

    def threshold(self, classifier: Any) -> Threshold:
        """The threshold to decide at with `classifier` (a `runtime.Classifier`)."""
        self.refresh(classifier)
        return self._in_force(classifier)

    def _in_force(self, classifier: Any) -> Threshold:
        return Threshold(float(self.site.threshold), "site") if self.site is not None else classifier.model_threshold()

    def refresh(self, classifier: Any) -> None:
        try:
            st = os.stat(self.path)
            stamp: tuple[float, int] | None = (st.st_mtime, st.st_size)
        except OSError:
            stamp = None
        if self._seen is not None and self._seen[0] == stamp and self._seen[1] is classifier:
            return
        self._seen = (stamp, classifier)
        try:
            site = load_site(self.data_dir)
            if site is not None and site.model_sha256 != classifier.sha256:
                raise SiteError(f"the site threshold was calibrated for model {site.model_sha256[:12]}..., not this one "
                                f"({classifier.sha256[:12]}...): run `edge-app calibrate` again, or "
                                "`edge-app calibrate --reset`")
            self.site, self.problem = site, None
        except SiteError as exc:
            self.site, self.problem = None, str(exc)
            log.warning("site threshold not used: %s", exc)
        in_force = self._in_force(classifier)
        log.info("threshold in force: %.4f (%s)", in_force.value, in_force.source)

    def describe(self, classifier: Any) -> dict[str, Any]:
        """The threshold in force, where it comes from and the site calibration (the screen and /api/stats)."""
        threshold = self.threshold(classifier)
        return {"threshold_in_force": threshold.value, "threshold_source": threshold.source,
                "site_calibration": self.site.to_dict() if self.site is not None else None}
