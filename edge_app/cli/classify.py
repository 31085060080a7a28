"""`edge-app classify IMAGE...`: screen image files through the device path.

Each file gets the decision the app would store for it (`decisions.decide`, at the model's own
threshold): benign / malignant, or no verdict (inconclusive: the quality gate failed; out_of_scope:
the scope check refused), with the quality gate's flags and, for no verdict, why and what to do."""

from __future__ import annotations

import argparse
import json
import sys

from .common import add_model_arguments, load_classifier

EXIT_BAD_INPUT = 2
EXIT_NO_MODEL = 3


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("classify", help="classify image files (benign / malignant, or no verdict and why)")
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
        record = {"file": path, **result.to_dict(), "quality_messages": result.quality.messages}
        if args.json:
            print(json.dumps(record))
        else:
            print(_human(record))
    return EXIT_BAD_INPUT if failures else 0


def _human(r: dict) -> str:
    t = r["timings_ms"]
    stages = " ".join(f"{k}={v:.1f}" for k, v in t.items() if k not in ("total",))
    scope = ("scope check n/a (model without one)" if r["in_scope"] is None else
             f"{'in scope' if r['in_scope'] else 'OUT OF SCOPE: not a dermoscopy lesion image'} "
             f"(score {r['scope_score']:.2f}, limit {r['scope_threshold']:.2f})")
    quality = ("quality: ok" if not r["quality_flags"] else
               "quality: " + "; ".join(f"{f}: {m}" for f, m in zip(r["quality_flags"], r["quality_messages"])))
    p = (f"p(malignant)={r['malignant_probability']:.3f} (threshold {r['threshold']:.3f}, {r['threshold_source']})")
    if r["verdict"]:
        head = f"{r['file']}: {r['decision'].upper()} ({r['decision_label']})  {p}"
    else:  # no verdict: the words first; the probability only for audit
        head = (f"{r['file']}: NO VERDICT, {r['decision']} ({r['decision_label']})\n  {r['decision_reason']}\n"
                f"  for audit only, not a result: {p}")
    return (
        f"{head}\n  {quality}\n  {scope}\n"
        f"  probabilities: " + ", ".join(f"{k}={v:.3f}" for k, v in r["probabilities"].items()) + "\n"
        f"  timings ms: {stages} total={t['total']:.1f}\n"
        f"  model {r['model_version']} sha256 {r['model_sha256'][:12]}  preprocessing v{r['preprocessing_version']}"
    )
