"""Scoring the shipped model on the test split (used for nothing else), through the device path.

Everything here reads probabilities the way the device makes them (`device_path.screen_files`: decode -> quality gate ->
six stages -> fp16 TFLite), at the shipped threshold unless a row says otherwise; `pipeline.step_evaluate` calls these
in turn and records each result in `metrics.json`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..device_path import screen_files
from ..images import read_image
from ..metrics import (
    choose_threshold_per_group,
    evaluate,
    evaluate_by,
    expected_calibration_error,
    operating_point,
    reliability,
    roc_auc,
)
from ..preprocess import Preprocessor
from ..runtime import Classifier
from .data import Table, load_table
from .dehair_check import measure
from .run_state import Run
from .shifts import SHIFTS, Shift


def device_probs(clf: Classifier, table: Table, root: Path, preprocessor: Preprocessor | None = None,
                 transform: Shift | None = None, desc: str = "") -> np.ndarray:
    """Malignant probability of each image through the device path (decode -> quality gate -> preprocess -> fp16 TFLite)."""
    results, _, errors = screen_files(clf, root, [r["file"] for r in table.rows], preprocessor=preprocessor,
                                      transform=transform, desc=desc)
    if errors:
        raise ValueError(f"{len(errors)} unreadable image(s) under {root}, e.g. {errors[0]}")
    return np.asarray([r.probability for r in results], np.float64)


def breakdown(table: Table, p: np.ndarray, thr: float, n_boot: int) -> dict[str, Any]:
    """Per dataset (AUC with and without HAM's follow-up images, sens/spec with CIs), per diagnosis
    (sensitivity for each malignant type, specificity for each benign type), all at one threshold."""
    y, ds, fu = table.y, table.datasets, table.follow_up
    out: dict[str, Any] = {"sources": {}, "dx": {}}
    keep = ~fu
    out["all_no_follow_up"] = {"n": int(keep.sum()), "auc": roc_auc(y[keep], p[keep]),
                               **{k: operating_point(y[keep], p[keep], thr)[k] for k in ("sensitivity", "specificity")}}
    for name, rep in evaluate_by(ds, y, p, thr, n_boot=n_boot, groups=table.groups).items():
        if "auc" not in rep:  # one class only
            continue
        m = ds == name
        mk = m & ~fu
        rep["auc_no_follow_up"] = roc_auc(y[mk], p[mk]) if fu[m].any() and len(set(y[mk].tolist())) == 2 else None
        rep["n_follow_up"] = int((m & fu).sum())
        out["sources"][name] = rep
    out["dx"] = per_diagnosis(table, p, thr)
    dx = np.array([r.get("dx", "") or "unknown" for r in table.rows])
    fu_p = p[fu]
    if fu_p.size:
        out["follow_up_median_p"] = float(np.median(fu_p))
        histo_nevi = (dx == "nv") & ~fu
        out["histo_nevi_median_p"] = float(np.median(p[histo_nevi])) if histo_nevi.any() else None
    return out


def per_diagnosis(table: Table, p: np.ndarray, thr: float) -> dict[str, dict[str, Any]]:
    """Sensitivity for each malignant diagnosis, specificity for each benign one, at `thr`."""
    y = table.y
    dx = np.array([r.get("dx", "") or "unknown" for r in table.rows])
    out = {}
    for d in sorted(set(dx.tolist())):
        m = dx == d
        malignant = bool(y[m].mean() > 0.5)
        hit = (p[m] >= thr) if malignant else (p[m] < thr)
        out[d] = {"n": int(m.sum()), "class": "malignant" if malignant else "benign",
                  "metric": "sensitivity" if malignant else "specificity", "value": float(hit.mean())}
    return out


def calibration(y: np.ndarray, shipped: np.ndarray, before: np.ndarray | None) -> dict[str, Any]:
    """ECE and reliability of the shipped (Platt-calibrated) model, and of the same student before calibration."""
    out: dict[str, Any] = {"test_ece_after": expected_calibration_error(y, shipped), "reliability_after": reliability(y, shipped),
                           "mean_p": float(shipped.mean()), "rate": float(y.mean())}
    if before is not None:
        out["test_ece_before"] = expected_calibration_error(y, before)
        out["reliability_before"] = reliability(y, before)
    return out


def compare_models(run: Run, val_test: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, dict]:
    """Each model's test figures at its own per-source validation threshold: {label: (val probs, test probs)}."""
    val, y_te = run.splits()["val"], run.labels("test")
    rows = {}
    for label, (pv, pt) in val_test.items():
        thr, _ = choose_threshold_per_group(val.y, pv, val.datasets, run.cfg.min_sensitivity)
        rows[label] = evaluate(y_te, pt, thr, n_boot=run.cfg.n_boot, groups=run.lesions("test"))
    return rows


def robustness(run: Run, clf: Classifier, p_base: np.ndarray) -> dict[str, dict]:
    """Each `SHIFTS` shift applied to the decoded test image before the pipeline, at the shipped threshold."""
    test, thr = run.splits()["test"], float(clf.manifest.threshold)
    y = test.y
    keys = ("sensitivity", "specificity", "balanced_accuracy")
    base = operating_point(y, p_base, thr)
    out = {"none": {"auc": roc_auc(y, p_base), **{k: base[k] for k in keys}}}
    for name, fn in SHIFTS.items():
        p = device_probs(clf, test, run.data, transform=fn, desc=name)
        op = operating_point(y, p, thr)
        out[name] = {"auc": roc_auc(y, p), **{k: op[k] for k in keys},
                     "sensitivity_change": op["sensitivity"] - base["sensitivity"]}
        run.log(f"shift {name}: AUC {out[name]['auc']:.4f} sens {op['sensitivity']:.3f} spec {op['specificity']:.3f}")
    return out


def cross_dataset(run: Run, clf: Classifier) -> dict[str, dict]:
    """The shipped model on every image of each other dataset (`--cross-data`), at the shipped threshold (nothing re-tuned)."""
    out: dict[str, dict] = {}
    for root in run.cross_data:
        table = load_table(root / "labels.csv")
        results, read, errors = screen_files(clf, root, [r["file"] for r in table.rows], desc=f"cross-dataset {root.name}")
        probs = [r.probability for r in results]
        kept = table.subset(read)
        if len(set(kept.y.tolist())) < 2:
            run.log(f"cross-dataset {root}: needs both classes among its readable images; skipped")
            continue
        report = evaluate(kept.y, np.array(probs), float(clf.manifest.threshold), n_boot=run.cfg.n_boot, groups=kept.lesions)
        no_verdict = sum(not r.decision.is_verdict for r in results)  # the device's decision; metrics score every image
        out[root.name] = {"path": str(root), "unreadable": len(errors), "no_verdict": no_verdict, **report}
        run.log(f"cross-dataset {root.name}: n {report['n']}, AUC {report['auc']['value']:.4f}, "
                f"sens {report['sensitivity']['value']:.3f}, spec {report['specificity']['value']:.3f} "
                f"({len(errors)} unreadable)")
    if not run.cross_data:
        run.log("cross-dataset: no other dataset staged beside the training data")
    return out


def melanoma_images(run: Run, per_source: int | None = None) -> dict[str, list[np.ndarray]]:
    """The test split's melanoma images, decoded, per dataset (at most `per_source` each)."""
    out: dict[str, list[np.ndarray]] = {}
    for r in run.splits()["test"].rows:
        if r.get("dx") == "mel" and (per_source is None or len(out.get(r["dataset"], [])) < per_source):
            out.setdefault(r["dataset"], []).append(read_image(run.data / r["file"]))
    return out


def dehair_on_melanomas(run: Run) -> dict[str, dict]:
    """`dehair_check.measure` on every test melanoma, per dataset (lesion pixels changed, synthetic hair found)."""
    return {src: measure(ims, run.preprocessor.params) for src, ims in melanoma_images(run).items()}
