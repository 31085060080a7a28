"""Does `edge-app calibrate` bring a shifted "new dermatoscope" back to its target sensitivity?

A labelled set is made by shifting the test split (a shift of the model card's
robustness table: warm colour cast, JPEG q50, ...), written to a temporary
folder (never into the repo), and split into two disjoint halves by lesion.
`edge-app calibrate` runs on half A; the threshold it proposes is then checked on
half B through `edge-app evaluate`, beside the model's own threshold:

    PYTHONPATH=$PWD .venv/bin/python benchmarks/site_calibration.py --shift colour_cast_warm --json
    PYTHONPATH=$PWD .venv/bin/python benchmarks/site_calibration.py --shift jpeg_q50 --model models/student_fp16.tflite

Target: sensitivity at the calibrated threshold >= 0.90 on half B. Halves of the
test split hold ~75 malignant lesions each, so one split is noisy: several
splits (seeds) are run and the median and the worst are reported.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def _cli(argv: list[str]) -> dict:
    from edge_app.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    if code not in (0, 2):
        raise SystemExit(f"edge-app {argv[0]} failed with exit code {code}")
    return json.loads(out.getvalue().strip().splitlines()[-1])


def make_shifted_set(test_csv: Path, root: Path, shift: str, out: Path) -> list[list[str]]:
    """Write the shifted images under `out` (lossless PNG: the shift is the only change); return file,label,lesion_id rows."""
    import cv2

    from edge_app.images import read_image
    from edge_app.labels_csv import read_labels_csv
    from edge_app.training.shifts import SHIFTS

    rows, _ = read_labels_csv(test_csv)
    (out / "images").mkdir(parents=True, exist_ok=True)
    table = []
    for r in rows:
        name = f"images/{Path(r['file']).stem}.png"
        cv2.imwrite(str(out / name), SHIFTS[shift](read_image(root / r["file"])))
        table.append([name, r["label"], r["lesion_id"]])
    return table


def split_halves(table: list[list[str]], out: Path, seed: int) -> tuple[Path, Path]:
    """Two lesion-disjoint label CSVs (half A, half B) of the shifted set."""
    lesions = sorted({lesion for _, _, lesion in table})
    half_a = set(np.random.default_rng(seed).permutation(lesions)[: len(lesions) // 2].tolist())
    paths = (out / f"half_a_{seed}.csv", out / f"half_b_{seed}.csv")
    for path, keep in zip(paths, (True, False)):
        with open(path, "w", newline="") as f:
            csv.writer(f).writerows([["file", "label", "lesion_id"], *(r for r in table if (r[2] in half_a) == keep)])
    return paths


def check_once(a_csv: Path, b_csv: Path, tmp: Path, args: argparse.Namespace) -> dict:
    """Calibrate on half A (`edge-app calibrate`), then the decisions on half B at both thresholds."""
    from edge_app.labels_csv import read_labels_csv
    from edge_app.metrics import operating_point

    cal = _cli(["calibrate", str(a_csv), "--min-sensitivity", str(args.min_sensitivity), "--bootstrap", str(args.bootstrap),
                "--model", args.model, "--data-dir", str(tmp / "device"), "--json"])
    evaluated = _cli(["evaluate", str(b_csv), "--model", args.model, "--bootstrap", str(args.bootstrap),
                      "--predictions", str(tmp / "b.csv"), "--json"])
    pred, _ = read_labels_csv(tmp / "b.csv")  # evaluate --predictions: file,label,p_malignant,decision
    y = np.array([r["label"] == "malignant" for r in pred], int)
    p = np.array([float(r["p_malignant"]) for r in pred])
    at_site, at_model = operating_point(y, p, cal["threshold"]), operating_point(y, p, cal["model_threshold"])
    return {
        "model_sha256": cal["model_sha256"], "model_threshold": cal["model_threshold"],
        "half_a": {"counts": cal["counts"], "threshold": cal["threshold"],
                   "expected": {k: cal["expected"][k] for k in ("sensitivity", "specificity")}},
        "half_b": {"n": len(y), "n_malignant": int(y.sum()), "auc": evaluated["auc"]["value"],
                   "at_site_threshold": {k: round(at_site[k], 4) for k in ("sensitivity", "specificity")},
                   "at_model_threshold": {k: round(at_model[k], 4) for k in ("sensitivity", "specificity")}},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shift", default="colour_cast_warm", help="a shift of the robustness table (default colour_cast_warm)")
    ap.add_argument("--test-csv", default=str(REPO / "models" / "splits" / "test.csv"))
    ap.add_argument("--root", default=str(REPO.parent / "shared" / "data"), help="folder the test CSV's paths are relative to")
    ap.add_argument("--model", default=str(REPO / "models" / "student_fp16.tflite"))
    ap.add_argument("--min-sensitivity", type=float, default=0.90)
    ap.add_argument("--seeds", default="0,1,2,3,4", help="lesion splits into halves A/B, comma-separated seeds (default 0-4)")
    ap.add_argument("--bootstrap", type=int, default=500)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    seeds = [int(v) for v in args.seeds.split(",")]
    with tempfile.TemporaryDirectory(prefix="site-calibration-") as tmp:
        table = make_shifted_set(Path(args.test_csv), Path(args.root), args.shift, Path(tmp))
        runs = {seed: check_once(*split_halves(table, Path(tmp), seed), Path(tmp), args) for seed in seeds}
    if not runs or not all(r["half_b"]["n"] for r in runs.values()):
        print("error: no work done: no split or an empty half B (is ../shared/data there?)", file=sys.stderr)
        return 1
    sens = [r["half_b"]["at_site_threshold"]["sensitivity"] for r in runs.values()]
    report = {
        "shift": args.shift, "min_sensitivity": args.min_sensitivity, "model_sha256": runs[seeds[0]]["model_sha256"],
        "splits": {str(k): v for k, v in runs.items()},
        "half_b_sensitivity_at_site_threshold": {"median": round(float(np.median(sens)), 4), "min": round(min(sens), 4),
                                                 "splits_meeting_target": sum(v >= args.min_sensitivity for v in sens),
                                                 "splits": len(sens)},
        "half_b_sensitivity_at_model_threshold_median": round(float(np.median(
            [r["half_b"]["at_model_threshold"]["sensitivity"] for r in runs.values()])), 4),
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{args.shift}: model {report['model_sha256'][:12]}, target sensitivity >= {args.min_sensitivity:.2f} on half B")
        for seed, r in runs.items():
            a, b = r["half_a"], r["half_b"]
            print(f"  split {seed}: threshold {a['threshold']:.4f} from half A ({a['counts']['used']} images, "
                  f"{a['counts']['malignant_cases']} malignant lesions; "
                  f"expected sens {a['expected']['sensitivity']['value']:.3f}); "
                  f"half B ({b['n']} images, {b['n_malignant']} malignant, AUC {b['auc']:.3f}): site threshold sens "
                  f"{b['at_site_threshold']['sensitivity']:.3f} spec {b['at_site_threshold']['specificity']:.3f}; "
                  "model threshold "
                  f"{r['model_threshold']:.4f} sens {b['at_model_threshold']['sensitivity']:.3f} "
                  f"spec {b['at_model_threshold']['specificity']:.3f}")
        s = report["half_b_sensitivity_at_site_threshold"]
        print(f"  half B sensitivity at the site threshold: median {s['median']:.3f}, min {s['min']:.3f}; "
              f"{s['splits_meeting_target']}/{s['splits']} splits meet the target")
    return 0 if np.median(sens) >= args.min_sensitivity else 1


if __name__ == "__main__":
    sys.exit(main())
