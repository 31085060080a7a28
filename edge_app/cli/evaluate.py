"""`edge-app evaluate LABELS.csv`: metrics of the shipped model over a labelled
folder, through the device path (no TensorFlow).

Metrics cover every readable image (as the model's probability stands, whatever
the quality gate and the scope check say); with a scope check, `out_of_scope_rate`
is the share of images it flags and `in_scope` repeats the metrics on the images it
keeps. `decisions` counts what the device decided for each image (the app's decision,
`decisions.decide`), and `no_verdict` how many of them got none."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import Counter
from pathlib import Path

from ..labels_csv import groups_of, read_labels_csv
from .common import add_model_arguments, load_classifier


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="AUC / sensitivity / specificity over a labelled CSV (file,label)")
    p.add_argument("labels", metavar="LABELS.csv")
    p.add_argument("--root", help="folder the CSV's file paths are relative to (default: the CSV's folder)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the 95%% CIs")
    p.add_argument("--group-by", default="lesion_id", metavar="COLUMN",
                   help="resample whole groups in the bootstrap when the CSV has this column (default: lesion_id; "
                        "'' resamples images)")
    p.add_argument("--predictions", help="also write file,label,p_malignant,decision to this CSV")
    p.add_argument("--exclude", action="append", default=[], metavar="COLUMN=VALUE",
                   help="leave out the rows whose COLUMN equals VALUE (repeatable; e.g. dx_type=follow_up)")
    p.add_argument("--per", metavar="COLUMN", help="also report the metrics for each value of this CSV column "
                   "(e.g. dataset: one row per source, as in the model card)")
    add_model_arguments(p)
    p.set_defaults(func=run)


def labelled_rows(csv_path: Path, group_by: str = "", exclude: list[str] | tuple[str, ...] = ()
                  ) -> tuple[list[dict[str, str]], list[str] | None]:
    """The CSV's rows (less those `exclude` names: COLUMN=VALUE) and each row's `group_by` value
    (None when the CSV has no such column). Raises ValueError with the reason."""
    rows, columns = read_labels_csv(csv_path)
    wanted = []
    for item in exclude:
        column, sep, value = item.partition("=")
        if not sep or column not in columns:
            raise ValueError(f"--exclude {item}: expected COLUMN=VALUE with a column of {csv_path} ({columns})")
        wanted.append((column, value))
    if not rows:
        raise ValueError(f"{csv_path} has no rows")
    rows = [r for r in rows if not any(r[c] == v for c, v in wanted)]
    if not rows:
        raise ValueError("--exclude left no rows")
    return rows, groups_of(rows, columns, group_by, csv_path)


def scope_report(results: list, labels: list[int], groups: list | None, threshold: float, n_boot: int, evaluate) -> dict:
    """`out_of_scope_rate` and the metrics on the in-scope images alone (None when the model has no scope check
    or when the in-scope images lack a class)."""
    import numpy as np

    flags = [r.classification.in_scope for r in results]
    if not flags or any(f is None for f in flags):
        return {"out_of_scope_rate": None, "in_scope": None}
    keep = [i for i, f in enumerate(flags) if f]
    out = {"out_of_scope_rate": round(1.0 - len(keep) / len(flags), 4), "n_out_of_scope": len(flags) - len(keep)}
    y = np.array([labels[i] for i in keep])
    if len(set(y.tolist())) < 2:
        return out | {"in_scope": None}
    g = None if groups is None else [groups[i] for i in keep]
    p = np.array([results[i].probability for i in keep])
    return out | {"in_scope": evaluate(y, p, threshold, n_boot=n_boot, groups=g)}


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
        rows, all_groups = labelled_rows(csv_path, args.group_by, args.exclude)
        per_values = _column(csv_path, rows, args.per) if args.per else None
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    classifier = load_classifier(args)
    if classifier is None:
        return 3
    threshold = classifier.model_threshold()
    results, read, errors = screen_files(classifier, root, [r["file"] for r in rows], threshold=threshold, desc="evaluate")
    probs = [r.probability for r in results]
    kept = [rows[i] for i in read]
    labels = [int(r["label"] == "malignant") for r in kept]
    groups = None if all_groups is None else [all_groups[i] for i in read]
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    if len(set(labels)) < 2:
        print("error: need at least one benign and one malignant readable image", file=sys.stderr)
        return 2
    report = evaluate(np.array(labels), np.array(probs), threshold.value, n_boot=args.bootstrap, groups=groups)
    report["errors"] = len(errors)
    report["model_sha256"] = classifier.sha256
    report |= decision_counts(results)
    report |= scope_report(results, labels, groups, threshold.value, args.bootstrap, evaluate)
    if per_values is not None:
        report["per"] = evaluate_by([per_values[i] for i in read], np.array(labels), np.array(probs), threshold.value,
                                    n_boot=args.bootstrap, groups=groups)
    if args.predictions:
        with open(args.predictions, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["file", "label", "p_malignant", "decision"])
            w.writerows((row["file"], row["label"], f"{r.probability:.6f}", r.decision.value) for row, r in zip(kept, results))
    if args.json:
        print(json.dumps(report))
    else:
        print(_human(report))
    return 2 if errors else 0


def decision_counts(results: list) -> dict:
    """How many images got each decision (every value listed, zero included) and how many got no verdict."""
    from ..decisions import all_decisions

    counts = Counter(r.decision.value for r in results)
    return {"decisions": {d: counts.get(d, 0) for d in all_decisions()},
            "no_verdict": sum(1 for r in results if not r.decision.is_verdict)}


def _column(csv_path: Path, rows: list[dict[str, str]], column: str) -> list[str]:
    """Each row's value of `column` (--per)."""
    if column not in rows[0]:
        raise ValueError(f"--per {column}: no such column in {csv_path} (has {list(rows[0])})")
    return [r[column] for r in rows]


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
      + [_no_verdict_line(r)]
      + ([] if r.get("out_of_scope_rate") is None else [
          f"  out of scope        {r['out_of_scope_rate']:.1%} of images ({r['n_out_of_scope']}) flagged by the scope check"]
         + ([] if not r.get("in_scope") else [
             (f"  in-scope only (n = {r['in_scope']['n']}): AUC {r['in_scope']['auc']['value']:.3f}, sensitivity "
             f"{r['in_scope']['sensitivity']['value']:.3f}, specificity {r['in_scope']['specificity']['value']:.3f}")]))
      + [f"  {k}: n {v['n']}, AUC {v['auc']['value']:.3f}, sensitivity {v['sensitivity']['value']:.3f}, "
         f"specificity {v['specificity']['value']:.3f}" if "auc" in v else f"  {k}: n {v['n']}, flagged {v['flagged']:.3f}"
         for k, v in r.get("per", {}).items()])


def _no_verdict_line(r: dict) -> str:
    """How many images the device would give no verdict (the metrics above still score their probability)."""
    d = r["decisions"]
    return (f"  no verdict          {r['no_verdict']} of {r['n']} images (inconclusive {d['inconclusive']}: "
            f"failed the quality gate, checked first; out of scope {d['out_of_scope']}); "
            "the metrics above still score every image's probability")
