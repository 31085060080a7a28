"""Which advice wins, the scope check's or the quality gate's? Measured on both kinds of bad picture.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/scope_advice.py --json

A picture can fail both checks. Two kinds matter (issue 20, item 4):

- **dermoscopy that is too dark or blurry** (test-split images darkened to a mean grey
  level under the gate's limit, or blurred): the technician must be told how to retake it;
- **pictures that are not dermoscopy** (generated text pages, flat colours, noise, patterns,
  and the staged phone photos): they must be told that this is not a dermoscopy image,
  not "over-exposed" or "blurry".

For each group it reports the share the quality gate flags, the share the scope check
flags, and the share that would get the wrong advice under each precedence rule:
`quality_first` (the gate's advice whenever it flags), `scope_first` (out of scope whenever
the scope check flags), `scope_first_unless_dark` (out of scope whenever the scope check
flags, except when the gate says too dark: a frame that dark is not judged for scope). Everything
goes through the device path (`device_path.screen_image`).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent

RULES = ("quality_first", "scope_first", "scope_first_unless_dark")


def advice(rule: str, quality_flags: list[str], in_scope: bool) -> str:
    """"retake" (the gate's advice), "not_dermoscopy" or "verdict" under a precedence rule."""
    if rule == "quality_first":
        return "retake" if quality_flags else "not_dermoscopy" if not in_scope else "verdict"
    if rule == "scope_first_unless_dark" and "too_dark" in quality_flags:
        return "retake"
    return "not_dermoscopy" if not in_scope else "retake" if quality_flags else "verdict"


def darken(im: np.ndarray) -> np.ndarray:
    """Scale to a mean grey level of about 25 (the gate flags under 40): an under-lit dermatoscope."""
    grey = float(cv2.cvtColor(im, cv2.COLOR_BGR2GRAY).mean())
    return np.clip(im.astype(np.float32) * (25.0 / max(grey, 1.0)), 0, 255).astype(np.uint8)


def blur(im: np.ndarray) -> np.ndarray:
    """Out of focus: a Gaussian blur of 2.5% of the short side."""
    return cv2.GaussianBlur(im, (0, 0), 0.025 * min(im.shape[:2]))


def main(argv: list[str] | None = None) -> int:
    from edge_app.device_path import screen_image
    from edge_app.images import read_image
    from edge_app.runtime import Classifier
    from edge_app.training import ood_images

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(REPO / "models" / "student_fp16.tflite"))
    ap.add_argument("--root", default=str(REPO.parent / "shared" / "data"), help="folder the split CSVs' paths are relative to")
    ap.add_argument("-n", type=int, default=100, help="images per group (default 100)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    clf = Classifier(args.model)
    if not clf.has_scope:
        print(f"error: {Path(args.model).name} has no scope check", file=sys.stderr)
        return 2
    root = Path(args.root)
    with open(REPO / "models" / "splits" / "test.csv", newline="") as f:
        test = list(csv.DictReader(f))
    rng = np.random.default_rng(0)
    picks = [test[i] for i in rng.permutation(len(test))[: args.n]]
    derm = [read_image(root / r["file"], min_side=clf.decode_min_side) for r in picks]
    groups: dict[str, tuple[bool, list[np.ndarray]]] = {  # name -> (is dermoscopy, frames)
        "dermoscopy_as_is": (True, derm),
        "dermoscopy_too_dark": (True, [darken(im) for im in derm]),
        "dermoscopy_blurry": (True, [blur(im) for im in derm]),
    }
    for kind in ("text", "flat", "noise", "pattern"):
        groups[f"not_dermoscopy_{kind}"] = (False, [im for _, im in ood_images.generate((kind,), per_kind=args.n, seed=7)])
    phone = root / "pad_ufes20" / "labels.csv"
    if phone.is_file():
        with open(phone, newline="") as f:
            rows = list(csv.DictReader(f))
        groups["not_dermoscopy_phone_photo"] = (False, [read_image(phone.parent / r["file"], min_side=clf.decode_min_side)
                                                        for r in rows[: args.n]])
    if not derm:
        print("error: no work done: the test split names no readable dermoscopy image", file=sys.stderr)
        return 1
    report = {}
    for name, (is_derm, frames) in groups.items():
        results = [screen_image(clf, im) for im in frames]
        flags = [r.quality.flags for r in results]
        scope = [bool(r.classification.in_scope) for r in results]
        # wrong: dermoscopy told it is not dermoscopy; anything else told to retake or given a verdict
        wrong = {rule: round(float(np.mean([(advice(rule, f, s) == "not_dermoscopy") == is_derm
                                            for f, s in zip(flags, scope)])), 4) for rule in RULES}
        report[name] = {
            "n": len(frames),
            "quality_flagged": round(float(np.mean([bool(f) for f in flags])), 4),
            "quality_flags": {k: round(float(np.mean([k in f for f in flags])), 4) for k in ("too_dark", "too_bright", "blurry",
                                                                                             "no_lesion")},
            "scope_flagged": round(float(np.mean([not s for s in scope])), 4),
            "wrong_advice": wrong,
        }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{'group':<32}{'gate':>7}{'scope':>7}  wrong advice: " + "  ".join(RULES))
        for name, r in report.items():
            print(f"{name:<32}{r['quality_flagged']:>7.0%}{r['scope_flagged']:>7.0%}  "
                  + "  ".join(f"{r['wrong_advice'][k]:>{len(k)}.0%}" for k in RULES))
    return 0


if __name__ == "__main__":
    sys.exit(main())
