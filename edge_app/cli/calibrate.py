"""`edge-app calibrate LABELS.csv`: a decision threshold for this clinic's own dermatoscope.

Runs the device path over a labelled set taken with the clinic's dermatoscope
(`file,label[,lesion_id]`, labels benign / malignant) and proposes the threshold
that keeps sensitivity at `--min-sensitivity` with the best specificity. Images
the device gives no verdict (the scope check refuses them, or they fail the
quality gate) are left out, and counted. With fewer than 30 malignant cases (lesions where the CSV has
`lesion_id`, else images) it refuses: the threshold would be noise.

The threshold is chosen so that it reaches the target sensitivity in 80% of
lesion-grouped bootstrap resamples of the set (not just on the set itself,
which would promise too much for the next patients; `metrics.robust_threshold`). The sensitivity and
specificity it reports come with 95% bootstrap CIs (whole lesions resampled).

The model is the one the app serves from the data directory (an installed
bundle, else the packaged model) unless `--model` names another; a site
threshold only ever applies to the model it was made for.

`--apply` writes it to `<data_dir>/site_threshold.json` with the date, the
set's sha256 and counts; the app uses it from its next screening and shows it
("site-calibrated") on every result and record. `--reset` returns to the
model's own threshold. Both are logged in `<data_dir>/audit.log`.

    edge-app calibrate clinic_set/labels.csv                   # report only
    edge-app calibrate clinic_set/labels.csv --apply           # put it in force
    edge-app calibrate --reset
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from .common import add_data_dir_arguments, add_model_arguments, load_classifier

MIN_MALIGNANT = 30
EXIT_REFUSED = 2
EXIT_NO_MODEL = 3


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("calibrate", help="propose (and --apply) a site threshold from a labelled set of this dermatoscope",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("labels", nargs="?", metavar="LABELS.csv", help="file,label[,lesion_id] of the clinic's own images")
    p.add_argument("--root", help="folder the CSV's file paths are relative to (default: the CSV's folder)")
    p.add_argument("--min-sensitivity", dest="min_sensitivity", type=float, default=0.90,
                   help="sensitivity the threshold must keep (default 0.90)")
    p.add_argument("--apply", action="store_true", help="write the threshold into this device's data directory")
    p.add_argument("--reset", action="store_true", help="remove the site threshold: back to the model's own")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the 95%% CIs (default 1000)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_model_arguments(p)  # default here: the model the app serves from the data directory
    add_data_dir_arguments(p)
    p.set_defaults(func=run)


def set_sha256(csv_path: Path, root: Path, files: list[str]) -> str:
    """sha256 over the CSV's bytes and every image's bytes, in the CSV's order: names the exact set used."""
    h = hashlib.sha256(csv_path.read_bytes())
    for file in files:
        try:
            h.update(hashlib.sha256((root / file).read_bytes()).digest())
        except OSError:
            h.update(b"unreadable:" + file.encode())
    return h.hexdigest()


def run(args: argparse.Namespace) -> int:
    from ..config import ConfigError, data_dir_setting

    if args.reset and (args.labels or args.apply):
        print("error: --reset takes no LABELS.csv and no --apply", file=sys.stderr)
        return EXIT_REFUSED
    if not args.reset and not args.labels:
        print("error: give LABELS.csv to calibrate, or --reset to return to the model's threshold", file=sys.stderr)
        return EXIT_REFUSED
    if not 0.5 <= args.min_sensitivity < 1.0:
        print(f"error: --min-sensitivity must be in [0.5, 1), got {args.min_sensitivity}", file=sys.stderr)
        return EXIT_REFUSED
    try:
        data_dir = data_dir_setting(args.config, args.data_dir)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    if args.reset:
        return _reset(data_dir)
    return _calibrate(args, data_dir)


def _reset(data_dir: Path) -> int:
    from ..site import reset_site

    had = reset_site(data_dir)
    if had:
        _audit(data_dir, "site_threshold_reset")
    print("site threshold removed: the model's own threshold is in force" if had
          else f"no site threshold under {data_dir}: the model's own threshold is already in force")
    return 0


def _calibrate(args: argparse.Namespace, data_dir: Path) -> int:
    import numpy as np

    try:
        from ..metrics import evaluate, robust_threshold
    except ImportError as exc:
        print(f"error: edge-app calibrate needs scikit-learn ({exc}): pip install 'edge-app[eval]'", file=sys.stderr)
        return EXIT_NO_MODEL
    from ..device_path import screen_files
    from ..labels_csv import groups_of, read_labels_csv

    csv_path = Path(args.labels)
    root = Path(args.root) if args.root else csv_path.parent
    try:
        rows, columns = read_labels_csv(csv_path)
        all_groups = groups_of(rows, columns, "lesion_id", csv_path)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    grouped = all_groups is not None
    cases = all_groups if grouped else list(range(len(rows)))  # the unit that counts: a lesion, else an image
    malignant_cases = len({cases[i] for i, r in enumerate(rows) if r["label"] == "malignant"})
    unit = "lesions" if grouped else "images"
    if malignant_cases < MIN_MALIGNANT:  # refuse before any work
        print(f"error: {csv_path} has {malignant_cases} malignant {unit}; calibrating needs at least {MIN_MALIGNANT} "
              "(a threshold from fewer would be noise): add cases and run again", file=sys.stderr)
        return EXIT_REFUSED
    classifier = load_classifier(args) if args.model else _model_in_force(args, data_dir)
    if classifier is None:
        return EXIT_NO_MODEL
    results, read, errors = screen_files(classifier, root, [r["file"] for r in rows], desc="calibrate")
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    used = [read[k] for k, r in enumerate(results) if r.decision.is_verdict]  # rows the device gives a verdict
    y = np.array([rows[i]["label"] == "malignant" for i in used], int)
    p = np.array([r.probability for r in results if r.decision.is_verdict], np.float64)
    groups = [all_groups[i] for i in used] if grouped else None
    n_mal = len({cases[i] for i in used if rows[i]["label"] == "malignant"})
    if n_mal < MIN_MALIGNANT or y.min() == y.max():
        print(f"error: only {n_mal} malignant {unit} remain readable with a verdict (of {malignant_cases}); calibrating "
              f"needs at least {MIN_MALIGNANT} and some benign ones", file=sys.stderr)
        return EXIT_REFUSED
    threshold = robust_threshold(y, p, groups, args.min_sensitivity)
    expected = evaluate(y, p, threshold, n_boot=args.bootstrap, groups=groups)
    at_model = evaluate(y, p, float(classifier.manifest.threshold), n_boot=args.bootstrap, groups=groups)
    decided = [r.decision.value for r in results]
    counts = {"images": len(rows), "used": len(used), "malignant_images": int(y.sum()), "benign_images": int(len(y) - y.sum()),
              "malignant_cases": n_mal, "case_unit": unit, "unreadable": len(errors),
              "out_of_scope": decided.count("out_of_scope"), "inconclusive": decided.count("inconclusive")}
    if grouped:
        counts["lesions"] = len(set(groups))
    report = {
        "threshold": round(threshold, 6), "min_sensitivity": args.min_sensitivity, "model_sha256": classifier.sha256,
        "model_threshold": float(classifier.manifest.threshold), "labels_csv": str(csv_path.resolve()),
        "set_sha256": set_sha256(csv_path, root, [r["file"] for r in rows]), "counts": counts,
        "expected": {k: expected[k] for k in ("sensitivity", "specificity", "auc", "confusion", "bootstrap")},
        "at_model_threshold": {k: at_model[k] for k in ("sensitivity", "specificity", "confusion")},
        "applied": False,
    }
    if args.apply:
        report["applied"] = True
        report["applied_at"] = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        report["site_file"] = str(_apply(data_dir, report))
    print(json.dumps(report) if args.json else _human(report))
    return 0


def _model_in_force(args: argparse.Namespace, data_dir: Path):
    """The model the app serves from this data directory (an installed bundle, else the packaged model),
    so that the site threshold is made for it; None after printing why it cannot be loaded."""
    from ..config import ConfigError, maintenance_setting
    from ..model_store import ModelStore
    from ..runtime import ModelError

    try:
        classifier, in_force = ModelStore(data_dir, maintenance_setting("model", args.config)).load_for_serving(args.threads)
    except (ModelError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
    print(f"calibrating model {classifier.manifest.version} ({classifier.sha256[:12]}..., {in_force.source})", file=sys.stderr)
    return classifier


def _apply(data_dir: Path, report: dict) -> Path:
    from ..site import SiteThreshold, save_site

    site = SiteThreshold(threshold=report["threshold"], model_sha256=report["model_sha256"], applied_at=report["applied_at"],
                         set_sha256=report["set_sha256"], labels_csv=report["labels_csv"], counts=report["counts"],
                         min_sensitivity=report["min_sensitivity"], expected=report["expected"])
    path = save_site(data_dir, site)
    _audit(data_dir, "site_threshold_applied", threshold=site.threshold, set_sha256=site.set_sha256,
           model_sha256=site.model_sha256, counts=site.counts)
    return path


def _audit(data_dir: Path, event: str, **fields) -> None:
    from .. import __version__
    from ..fileio import append_audit

    append_audit(data_dir, event, __version__, **fields)


def _human(r: dict) -> str:
    def ci(block: dict, key: str) -> str:
        v = block[key]
        return f"{v['value']:.3f} (95% CI {v['ci95'][0]:.3f}-{v['ci95'][1]:.3f})"

    c, e = r["counts"], r["expected"]
    lines = [
        (f"site threshold {r['threshold']:.4f} for sensitivity >= {r['min_sensitivity']:.2f} "
        f"(model's own threshold {r['model_threshold']:.4f})"),
        (f"  set: {c['used']} images used of {c['images']} ({c['malignant_images']} malignant, {c['malignant_cases']} malignant "
        f"{c['case_unit']}); no verdict: {c['out_of_scope']} out of scope, {c['inconclusive']} failed the quality gate; "
        f"{c['unreadable']} unreadable; sha256 {r['set_sha256'][:16]}..."),
        (f"  expected sensitivity {ci(e, 'sensitivity')}, specificity {ci(e, 'specificity')}; CIs from "
        f"{e['bootstrap']['resamples']} resamples of {e['bootstrap'].get('groups', c['used'])} {c['case_unit']}"),
        (f"  at the model's own threshold: sensitivity {r['at_model_threshold']['sensitivity']['value']:.3f}, "
        f"specificity {r['at_model_threshold']['specificity']['value']:.3f}"),
    ]
    if c["out_of_scope"] > 0.1 * c["images"]:
        lines.append(f"  warning: the scope check flags {c['out_of_scope']} of {c['images']} images: this dermatoscope's "
                     "images look unlike the training data; expect many 'out of scope' results")
    lines.append(f"  applied: written to {r['site_file']}; the app uses it from its next screening" if r["applied"]
                 else "  not applied: run again with --apply to put it in force")
    return "\n".join(lines)
