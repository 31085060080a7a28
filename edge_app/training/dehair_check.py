"""Does `dehair` remove hair and leave the lesion alone? Measured on real lesions at model size.

- damage: share of lesion pixels that `dehair` changes, on the lesions as they are
  (target <= 2%; the lesion is the dark region found by Otsu on the model-size image);
- recall: share of synthetic hair pixels found by `hair_mask` after thin dark
  curves are drawn onto the same lesions (target >= 80%).

    python -m edge_app.training.dehair_check --data ../shared/data --csv models/splits/test.csv --dx mel
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from ..images import read_image
from ..preprocess import Preprocessor, PreprocessParams, hair_mask


def lesion_mask(image: np.ndarray) -> np.ndarray:
    """The lesion: the largest dark connected region (Otsu on blurred grey)."""
    grey = cv2.GaussianBlur(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), (0, 0), 2.0)
    _, dark = cv2.threshold(grey, 0, 1, cv2.THRESH_BINARY_INV + cv2.THRESH_OTSU)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(dark.astype(np.uint8), connectivity=8)
    if n <= 1:
        return dark.astype(bool)
    biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return labels == biggest


def draw_hairs(image: np.ndarray, rng: np.random.Generator, n: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Thin dark, slightly curved hairs across the image; returns (image, true hair mask)."""
    out, truth = image.copy(), np.zeros(image.shape[:2], np.uint8)
    s = image.shape[0]
    for _ in range(n):
        p0, p2 = rng.uniform(0, s, 2), rng.uniform(0, s, 2)
        p1 = (p0 + p2) / 2 + rng.normal(0, s * 0.06, 2)  # gentle bend
        t = np.linspace(0, 1, 40)[:, None]
        pts = ((1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2).round().astype(np.int32)
        colour = tuple(int(v) for v in rng.uniform(10, 45, 3))
        width = int(rng.choice([1, 1, 2]))
        cv2.polylines(out, [pts], False, colour, width)
        cv2.polylines(truth, [pts], False, 1, width)
    return out, truth.astype(bool)


def measure(images: list[np.ndarray], params: PreprocessParams | None = None, seed: int = 0) -> dict:
    p = params or PreprocessParams()
    pre = Preprocessor(p)
    rng = np.random.default_rng(seed)
    damage, recall = [], []
    for im in images:
        model_image = pre.stage("resize", pre.stage("crop", im))
        lesion = lesion_mask(model_image)
        cleaned = pre.stage("dehair", model_image)
        changed = np.any(cleaned != model_image, axis=2)
        damage.append(float(changed[lesion].mean()) if lesion.any() else 0.0)
        hairy, truth = draw_hairs(model_image, rng)
        found = hair_mask(hairy, p.dehair_kernel_fraction, p.dehair_threshold, p.dehair_min_length_fraction,
                          p.dehair_max_width, p.dehair_max_small_holes).astype(bool)
        recall.append(float(found[truth].mean()))
    d, r = np.array(damage), np.array(recall)
    return {"n": len(images), "lesion_pixels_altered": {"median": float(np.median(d)), "mean": float(d.mean()),
                                                      "p90": float(np.quantile(d, 0.9)),
                                                      "share_over_2pct": float((d > 0.02).mean())},
            "synthetic_hair_found": {"median": float(np.median(r)), "mean": float(r.mean()), "p10": float(np.quantile(r, 0.1))}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data", help="folder the CSV's file paths are relative to")
    ap.add_argument("--csv", default="models/splits/test.csv", help="labels CSV (file,label,dx,...)")
    ap.add_argument("--dx", default="mel", help="diagnoses to measure on, comma separated (melanoma: mel)")
    ap.add_argument("--limit", type=int, default=300)
    args = ap.parse_args(argv)
    from .data import load_table

    table = load_table(args.csv)
    wanted = set(args.dx.split(","))
    by_source: dict[str, list[np.ndarray]] = {}
    for r in table.rows:
        if r.get("dx") in wanted or (r.get("dx") == "melanoma" and "mel" in wanted):
            src = r.get("dataset") or "all"
            if len(by_source.setdefault(src, [])) < args.limit:
                by_source[src].append(read_image(Path(args.data) / r["file"]))
    print(json.dumps({src: measure(ims) for src, ims in by_source.items()}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
