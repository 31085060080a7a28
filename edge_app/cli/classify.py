"""`edge-app classify IMAGE...`: screen image files through the device path."""

from __future__ import annotations

import argparse
import json
import sys

from .common import add_model_arguments, load_classifier

EXIT_BAD_INPUT = 2
EXIT_NO_MODEL = 3


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("classify", help="classify image files (benign / malignant)")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    add_model_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..device_path import screen_file
    from ..images import ImageDecodeError

    classifier = load_classifier(args)
    if classifier is None:
        return EXIT_NO_MODEL
    failures = 0
    for path in args.images:
        try:
            result = screen_file(classifier, path)
        except (ImageDecodeError, ValueError) as exc:
            failures += 1
            if args.json:
                print(json.dumps({"file": path, "error": str(exc)}))
            print(f"error: {path}: {exc}", file=sys.stderr)
            continue
        record = {"file": path, **result.classification.to_dict(), "quality_flags": result.quality.flags}
        if args.json:
            print(json.dumps(record))
        else:
            print(_human(record))
    return EXIT_BAD_INPUT if failures else 0


def _human(r: dict) -> str:
    t = r["timings_ms"]
    stages = " ".join(f"{k}={v:.1f}" for k, v in t.items() if k not in ("total",))
    scope = ("scope check n/a (model without one)" if r["in_scope"] is None else
             f"{'in scope' if r['in_scope'] else 'OUT OF SCOPE: not a dermoscopy lesion image, no verdict'} "
             f"(score {r['scope_score']:.2f}, limit {r['scope_threshold']:.2f})")
    return (
        f"{r['file']}: {r['decision'].upper()}  p(malignant)={r['malignant_probability']:.3f} "
        f"(threshold {r['threshold']:.3f}, {r['threshold_source']})\n"
        f"  {scope}\n"
        f"  probabilities: " + ", ".join(f"{k}={v:.3f}" for k, v in r["probabilities"].items()) + "\n"
        f"  timings ms: {stages} total={t['total']:.1f}\n"
        f"  model {r['model_version']} sha256 {r['model_sha256'][:12]}  preprocessing v{r['preprocessing_version']}"
    )
