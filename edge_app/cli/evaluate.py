"""`edge-app evaluate LABELS.csv`: metrics of the shipped model over a labelled
folder, through the device path (no TensorFlow).

Metrics cover every readable image (as the model's probability stands, whatever
the scope check says); with a scope check, `out_of_scope_rate` is the share of
images it flags and `in_scope` repeats the metrics on the images it keeps."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from .common import add_model_arguments, load_classifier

LABEL_VALUES = {"benign": 0, "malignant": 1}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="AUC / sensitivity / specificity over a labelled CSV (file,label)")
    p.add_argument("labels", metavar="LABELS.csv")
    p.add_argument("--root", help="folder the CSV's file paths are relative to (default: the CSV's folder)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the 95%% CIs")
    p.add_argument("--group-by", default="lesion_id", metavar="COLUMN",
                   help="resample whole groups in the bootstrap when the CSV has this column (default: lesion_id; "
                        "'' resamples images)")
    p.add_argument("--predictions", help="also write file,label,p_malignant to this CSV")
    p.add_argument("--exclude", action="append", default=[], metavar="COLUMN=VALUE",
                   help="leave out the rows whose COLUMN equals VALUE (repeatable; e.g. dx_type=follow_up)")
    p.add_argument("--per", metavar="COLUMN", help="also report the metrics for each value of this CSV column "
                   "(e.g. dataset: one row per source, as in the model card)")
    add_model_arguments(p)
    p.set_defaults(func=run)


def read_labels(csv_path: Path, group_by: str = "") -> list[tuple[str, int, str | None]]:
    """(file, 0/1 label, group) rows; group is None unless the CSV has the `group_by` column."""
    try:
        with open(csv_path, newline="") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or not {"file", "label"} <= set(reader.fieldnames):
                raise ValueError(f"{csv_path} needs columns 'file' and 'label' (found {reader.fieldnames})")
            rows = []
            grouped = bool(group_by) and group_by in reader.fieldnames
            for line, row in enumerate(reader, start=2):
                label = (row["label"] or "").strip().lower()
                if label not in LABEL_VALUES:
                    raise ValueError(f"{csv_path}:{line}: label {row['label']!r} is not benign or malignant")
                group = (row[group_by] or "").strip() if grouped else None
                if grouped and not group:
                    raise ValueError(f"{csv_path}:{line}: empty {group_by}")
                rows.append((row["file"], LABEL_VALUES[label], group))
    except OSError as exc:
        raise ValueError(f"cannot read {csv_path}: {exc.strerror or exc}") from None
    if not rows:
        raise ValueError(f"{csv_path} has no rows")
    return rows


def scope_report(results: list, labels: list[int], groups: list, threshold: float, n_boot: int, evaluate) -> dict:
    """`out_of_scope_rate` and the metrics on the in-scope images alone (None when the model has no scope check
    or when the in-scope images lack a class)."""
    import numpy as np

    flags = [r.in_scope for r in results]
    if not flags or any(f is None for f in flags):
        return {"out_of_scope_rate": None, "in_scope": None}
    keep = [i for i, f in enumerate(flags) if f]
    out = {"out_of_scope_rate": round(1.0 - len(keep) / len(flags), 4), "n_out_of_scope": len(flags) - len(keep)}
    y = np.array([labels[i] for i in keep])
    if len(set(y.tolist())) < 2:
        return out | {"in_scope": None}
    g = [groups[i] for i in keep]
    p = np.array([results[i].malignant_probability for i in keep])
    return out | {"in_scope": evaluate(y, p, threshold, n_boot=n_boot, groups=g if g[0] is not None else None)}


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ..device_path import screen_files

    try:  # scikit-learn is not part of the device install; see the `eval` extra
        from ..metrics import evaluate, evaluate_by
    except ImportError as exc:
        print(f"error: edge-app evaluate needs scikit-learn ({exc}): pip install 'edge-app[eval]' "
              "or, on Raspberry Pi OS, apt install python3-sklearn", file=sys.stderr)
        return 3
    csv_path = Path(args.labels)
    root = Path(args.root) if args.root else csv_path.parent
    try:
        rows = read_labels(csv_path, args.group_by)
        rows = _excluding(csv_path, rows, args.exclude)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    classifier = load_classifier(args)
    if classifier is None:
        return 3
    results, read, errors = screen_files(classifier, root, [file for file, _, _ in rows], desc="evaluate")
    probs = [r.malignant_probability for r in results]
    kept = [rows[i] for i in read]
    labels = [label for _, label, _ in kept]
    groups = [group for _, _, group in kept]
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    if len(set(labels)) < 2:
        print("error: need at least one benign and one malignant readable image", file=sys.stderr)
        return 2
    report = evaluate(np.array(labels), np.array(probs), classifier.manifest.threshold, n_boot=args.bootstrap,
                      groups=groups if groups[0] is not None else None)
    report["errors"] = len(errors)
    report["model_sha256"] = classifier.sha256
    report |= scope_report(results, labels, groups, classifier.manifest.threshold, args.bootstrap, evaluate)
    if args.per:
        try:
            values = _column(csv_path, args.per, [rows[i][0] for i in read])
            report["per"] = evaluate_by(values, np.array(labels), np.array(probs), classifier.manifest.threshold,
                                        n_boot=args.bootstrap, groups=groups if groups[0] is not None else None)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    if args.predictions:
        with open(args.predictions, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["file", "label", "p_malignant"])
            w.writerows((fi, "malignant" if la else "benign", f"{p:.6f}") for (fi, la, _), p in zip(kept, probs))
    if args.json:
        print(json.dumps(report))
    else:
        print(_human(report))
    return 2 if errors else 0


def _excluding(csv_path: Path, rows: list, exclude: list[str]) -> list:
    if not exclude:
        return rows
    drop = set()
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        for item in exclude:
            column, sep, _ = item.partition("=")
            if not sep or column not in (reader.fieldnames or []):
                raise ValueError(f"--exclude {item}: expected COLUMN=VALUE with a column of {csv_path} ({reader.fieldnames})")
        wanted = [item.partition("=")[::2] for item in exclude]
        drop = {row["file"] for row in reader if any(row[c] == v for c, v in wanted)}
    kept = [r for r in rows if r[0] not in drop]
    if not kept:
        raise ValueError("--exclude left no rows")
    return kept


def _column(csv_path: Path, column: str, files: list[str]) -> list[str]:
    """The value of `column` for each of `files` (rows of the CSV)."""
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        if column not in (reader.fieldnames or []):
            raise ValueError(f"--per {column}: no such column in {csv_path} (has {reader.fieldnames})")
        value_of = {row["file"]: row[column] for row in reader}
    return [value_of[f] for f in files]


def _human(r: dict) -> str:
    def line(name: str, key: str) -> str:
        v = r[key]
        return f"  {name:<18} {v['value']:.3f}  (95% CI {v['ci95'][0]:.3f}-{v['ci95'][1]:.3f})"

    c = r["confusion"]
    return "\n".join([
        f"n = {r['n']} ({r['n_malignant']} malignant), threshold {r['threshold']:.4f}; 95% CIs from "
        f"{r['bootstrap']['resamples']} bootstrap resamples of "
        + (f"{r['bootstrap']['groups']} lesions" if r["bootstrap"]["unit"] == "group" else "images"),
        line("AUC", "auc"), line("sensitivity", "sensitivity"), line("specificity", "specificity"),
        line("balanced accuracy", "balanced_accuracy"),
        "  confusion           predicted malignant  predicted benign",
        f"    malignant         {c['tp']:>8}             {c['fn']:>8}",
        f"    benign            {c['fp']:>8}             {c['tn']:>8}",
    ] + ([f"  unreadable files: {r['errors']}"] if r["errors"] else [])
      + ([] if r.get("out_of_scope_rate") is None else [
          f"  out of scope        {r['out_of_scope_rate']:.1%} of images ({r['n_out_of_scope']}) flagged by the scope check"]
         + ([] if not r.get("in_scope") else [
             (f"  in-scope only (n = {r['in_scope']['n']}): AUC {r['in_scope']['auc']['value']:.3f}, sensitivity "
             f"{r['in_scope']['sensitivity']['value']:.3f}, specificity {r['in_scope']['specificity']['value']:.3f}")]))
      + [f"  {k}: n {v['n']}, AUC {v['auc']['value']:.3f}, sensitivity {v['sensitivity']['value']:.3f}, "
         f"specificity {v['specificity']['value']:.3f}" if "auc" in v else f"  {k}: n {v['n']}, flagged {v['flagged']:.3f}"
         for k, v in r.get("per", {}).items()])
