"""Per-source shortcut check: what, other than the lesion, could tell a model where an image came from (and so its label).

Read from the JPEG headers (size, quantisation tables: cheap, nothing decoded) for every image, plus an 8x8 blockiness
score (decoded) on a seeded sample: a source whose images are squashed squares, or compressed harder, or almost all one
class, hands the model a cue that does not exist on a new dermatoscope. `shortcut_auc` measures how well those image
properties alone predict malignancy across the pooled sources (lesion-grouped cross-validation), with every source and
without each one: a source that lifts it is teaching a shortcut.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ..images import read_image
from ..metrics import roc_auc
from .data import Table

# IJG (libjpeg) standard luminance table at quality 50; a file's table is this scaled by 50/q (q < 50) or (200 - 2q)/100
IJG_LUMA = np.array([16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22,
                     29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92, 49, 64, 78, 87, 103,
                     121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99], np.float64)
_QUALITIES = np.arange(1, 101)
_TABLE_SUMS = np.array([np.clip(np.floor((IJG_LUMA * s + 50) / 100), 1, 255).sum()
                        for s in np.where(_QUALITIES < 50, 5000.0 / _QUALITIES, 200.0 - 2.0 * _QUALITIES)])
FEATURES = ("width", "height", "aspect", "square", "jpeg_quality", "bytes_per_pixel")
# what the shortcut AUC is fitted on: properties of the camera and the file, not of the lesion (bytes/pixel follows the
# lesion's texture within a source, so it stays out)
SOURCE_FEATURES = ("width", "height", "aspect", "square", "jpeg_quality")


def jpeg_quality(table: list[int] | None) -> float:
    """Quality (1-100) whose IJG luminance table is nearest to this one (order-free: by the tables' sums); nan if not JPEG."""
    if not table:
        return float("nan")
    return float(_QUALITIES[int(np.argmin(np.abs(_TABLE_SUMS - float(np.sum(table)))))])


def header(path: Path) -> dict[str, float]:
    """Size, aspect, squareness, estimated JPEG quality and bytes per pixel, from the file's header alone."""
    with Image.open(path) as im:
        w, h = im.size
        q = jpeg_quality(list(getattr(im, "quantization", {}).get(0, []))) if im.format == "JPEG" else float("nan")
    return {"width": w, "height": h, "aspect": max(w, h) / min(w, h), "square": float(w == h), "jpeg_quality": q,
            "bytes_per_pixel": path.stat().st_size / (w * h)}


def blockiness(path: Path) -> float:
    """Mean step across 8x8 block edges over the mean step inside blocks (grey): ~1 for clean images, > 1 where an
    earlier, harder JPEG compression left its grid (even after re-encoding at a high quality)."""
    g = read_image(path).mean(axis=2)
    d = np.abs(np.diff(g, axis=1))
    cols = np.arange(d.shape[1])
    edge = d[:, cols % 8 == 7].mean()
    inside = d[:, cols % 8 != 7].mean()
    return float(edge / max(inside, 1e-6))


def measure(table: Table, root: Path, sample: int = 100, seed: int = 0) -> tuple[np.ndarray, dict[str, dict[str, Any]]]:
    """Header features of every image (N, len(FEATURES)) and the per-source summary table."""
    feats = np.array([[header(root / r["file"])[k] for k in FEATURES] for r in table.rows], np.float64)
    ds, y = table.datasets, table.y
    rng = np.random.default_rng(seed)
    summary: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(ds.tolist()):
        idx = np.flatnonzero(ds == name)
        f = feats[idx]
        pick = np.sort(rng.permutation(idx)[:sample])
        summary[name] = {
            "images": len(idx), "malignant_share": round(float(y[idx].mean()), 4),
            "width_median": float(np.median(f[:, 0])), "height_median": float(np.median(f[:, 1])),
            "width_range": [int(f[:, 0].min()), int(f[:, 0].max())],
            "aspect_median": round(float(np.median(f[:, 2])), 3), "square_share": round(float(f[:, 3].mean()), 4),
            "jpeg_quality_median": float(np.nanmedian(f[:, 4])) if np.isfinite(f[:, 4]).any() else None,
            "bytes_per_pixel_median": round(float(np.median(f[:, 5])), 3),
            "blockiness_median": round(float(np.median([blockiness(root / table.rows[i]["file"]) for i in pick])), 3),
            "blockiness_sample": len(pick),
        }
    return feats, summary


def shortcut_auc(feats: np.ndarray, table: Table, seed: int = 0) -> float:
    """AUC of malignancy predicted from SOURCE_FEATURES alone (logistic regression, 5 lesion-grouped folds)."""
    y, groups = table.y, np.array(table.groups)
    if len(set(y.tolist())) < 2 or min(np.bincount(y)) < 5:
        return float("nan")
    x = np.column_stack([feats[:, :2], np.log(feats[:, 2]), feats[:, 3], np.nan_to_num(feats[:, 4], nan=100.0)])
    model = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=1000))
    folds = StratifiedGroupKFold(n_splits=5, shuffle=True, random_state=seed)
    p = cross_val_predict(model, x, y, groups=groups, cv=folds, method="predict_proba")[:, 1]
    return roc_auc(y, p)


def shortcut_report(table: Table, root: Path, sample: int = 100, seed: int = 0) -> dict[str, Any]:
    """The per-source table, and the shortcut AUC with every source and without each."""
    feats, summary = measure(table, root, sample, seed)
    ds = table.datasets
    names = list(summary)
    without = {}
    if len(names) > 1:
        for name in names:
            keep = np.flatnonzero(ds != name)
            without[name] = round(shortcut_auc(feats[keep], table.subset(keep), seed), 4)
    return {"sources": summary, "features": list(FEATURES), "shortcut_auc_all": round(shortcut_auc(feats, table, seed), 4),
            "shortcut_auc_without": without,
            "note": "AUC of malignant vs benign from image size, aspect, squareness and JPEG quality alone "
                    "(logistic regression, 5 lesion-grouped folds over the pooled sources); 0.5 = no shortcut"}


def markdown(report: dict[str, Any]) -> str:
    """The report as a Markdown table (the run folder's shortcuts.md and the card)."""
    head = ("| source | images | malignant | median size (w x h) | width range | aspect | square | JPEG quality | bytes/px "
            "| 8x8 blockiness | shortcut AUC without it |")
    lines = [head, "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in report["sources"].items():
        q = "n/a" if r["jpeg_quality_median"] is None else f"{r['jpeg_quality_median']:.0f}"
        lines.append(f"| {name} | {r['images']} | {r['malignant_share']:.1%} | "
                     f"{r['width_median']:.0f} x {r['height_median']:.0f} | "
                     f"{r['width_range'][0]}-{r['width_range'][1]} | {r['aspect_median']:.2f} | {r['square_share']:.0%} | {q} | "
                     f"{r['bytes_per_pixel_median']:.2f} | {r['blockiness_median']:.2f} | "
                     f"{report['shortcut_auc_without'].get(name, float('nan')):.3f} |")
    lines.append(f"\nShortcut AUC with every source: **{report['shortcut_auc_all']:.3f}** ({report['note']}). "
                 "JPEG quality is estimated from the luminance quantisation table (the last encoding); blockiness (median over "
                 "a seeded sample per source) shows an earlier, harder compression that a re-encoding hides.")
    return "\n".join(lines)
