"""Screening metrics: AUC, sensitivity, specificity, balanced accuracy, with
bootstrap confidence intervals, and the validation-only threshold choice.

One implementation for `edge-app evaluate` (device path) and the training
module's reports, built on scikit-learn's metrics.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, roc_auc_score, roc_curve

DEFAULT_MIN_SENSITIVITY = 0.90
ASSURANCE = 0.80  # robust_threshold: share of bootstrap resamples in which the threshold must reach the target sensitivity
THRESHOLD_RESAMPLES = 200


def roc_auc(y_true: np.ndarray, p_malignant: np.ndarray) -> float:
    y = np.asarray(y_true).astype(int)
    if len(np.unique(y)) < 2:
        return float("nan")
    return float(roc_auc_score(y, np.asarray(p_malignant, dtype=np.float64)))


def operating_point(y_true: np.ndarray, p_malignant: np.ndarray, threshold: float) -> dict[str, Any]:
    """Sensitivity, specificity, balanced accuracy and confusion at `threshold`
    (malignant when p >= threshold)."""
    y = np.asarray(y_true).astype(int)
    pred = (np.asarray(p_malignant) >= threshold).astype(int)
    tn, fp, fn, tp = confusion_matrix(y, pred, labels=[0, 1]).ravel()
    sens = tp / (tp + fn) if tp + fn else float("nan")
    spec = tn / (tn + fp) if tn + fp else float("nan")
    return {
        "sensitivity": float(sens),
        "specificity": float(spec),
        "balanced_accuracy": float((sens + spec) / 2),
        "confusion": {"tp": int(tp), "fn": int(fn), "tn": int(tn), "fp": int(fp)},
    }


def choose_threshold(y_true: np.ndarray, p_malignant: np.ndarray, min_sensitivity: float = DEFAULT_MIN_SENSITIVITY) -> float:
    """Highest-specificity threshold whose sensitivity is >= `min_sensitivity`.

    Use on validation data only. Among thresholds with equal specificity the
    lowest is taken (the most sensitive).
    """
    y = np.asarray(y_true).astype(int)
    p = np.asarray(p_malignant, dtype=np.float64)
    fpr, tpr, thresholds = roc_curve(y, p, drop_intermediate=False)
    ok = np.flatnonzero(tpr >= min_sensitivity)
    if ok.size == 0:
        return float(p.min())
    lowest_fpr = fpr[ok].min()
    best = ok[fpr[ok] == lowest_fpr][-1]  # thresholds decrease along the curve: last = most sensitive
    return float(min(1.0, thresholds[best]))


def resamples(n: int, n_boot: int, seed: int = 0, groups: np.ndarray | list | None = None) -> Iterator[np.ndarray]:
    """`n_boot` bootstrap resamples of `n` cases, as index arrays. With `groups` (e.g. lesion ids) whole
    groups are resampled: images of one lesion are correlated, so resampling images alone gives intervals
    that are too narrow."""
    rng = np.random.default_rng(seed)
    members = group_members(groups, n)
    for _ in range(n_boot):
        if members is None:
            yield rng.integers(0, n, n)
        else:
            yield np.concatenate([members[g] for g in rng.integers(0, len(members), len(members))])


def bootstrap_ci(
    y_true: np.ndarray, p_malignant: np.ndarray, threshold: float, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05,
    groups: np.ndarray | list | None = None,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap 95% CIs of AUC and the operating point (`resamples`: whole groups with `groups`)."""
    y = np.asarray(y_true).astype(int)
    p = np.asarray(p_malignant, dtype=np.float64)
    keys = ("auc", "sensitivity", "specificity", "balanced_accuracy")
    samples: dict[str, list[float]] = {k: [] for k in keys}
    for idx in resamples(len(y), n_boot, seed, groups):
        yb, pb = y[idx], p[idx]
        if yb.min() == yb.max():
            continue
        samples["auc"].append(roc_auc_score(yb, pb))
        op = operating_point(yb, pb, threshold)
        for k in keys[1:]:
            samples[k].append(op[k])
    lo, hi = 100 * alpha / 2, 100 * (1 - alpha / 2)
    return {
        k: (float(np.percentile(v, lo)), float(np.percentile(v, hi))) if v else (float("nan"), float("nan"))
        for k, v in samples.items()
    }


def robust_threshold(y_true: np.ndarray, p_malignant: np.ndarray, groups: np.ndarray | list | None,
                     min_sensitivity: float = DEFAULT_MIN_SENSITIVITY, seed: int = 0) -> float:
    """The threshold that reaches `min_sensitivity` in ASSURANCE of the (group-) bootstrap resamples, not only
    on the set itself (which would promise too much for the next patients): the (1 - ASSURANCE) quantile of
    the per-resample `choose_threshold`s, or the set's own when lower (lower = more sensitive)."""
    y = np.asarray(y_true).astype(int)
    p = np.asarray(p_malignant, dtype=np.float64)
    picks = [choose_threshold(y[idx], p[idx], min_sensitivity)
             for idx in resamples(len(y), THRESHOLD_RESAMPLES, seed, groups) if y[idx].min() != y[idx].max()]
    point = choose_threshold(y, p, min_sensitivity)
    if not picks:
        return point
    return float(min(point, np.quantile(picks, 1.0 - ASSURANCE)))


def group_members(groups: np.ndarray | list | None, n: int) -> list[np.ndarray] | None:
    """Indices of each group (in first-seen order), or None to resample single cases."""
    if groups is None:
        return None
    g = np.asarray(groups)
    if len(g) != n:
        raise ValueError(f"groups has {len(g)} entries for {n} cases")
    _, first, inverse = np.unique(g, return_index=True, return_inverse=True)
    order = np.argsort(first)  # stable, independent of the ids' sort order
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    inverse = rank[inverse.ravel()]
    return [np.flatnonzero(inverse == k) for k in range(len(order))]


def evaluate(y_true: np.ndarray, p_malignant: np.ndarray, threshold: float, n_boot: int = 1000, seed: int = 0,
             groups: np.ndarray | list | None = None) -> dict[str, Any]:
    """The report shape shared by `edge-app evaluate --json` and the training module.

    `groups` (lesion ids) makes the bootstrap resample lesions instead of images.
    """
    y = np.asarray(y_true).astype(int)
    p = np.asarray(p_malignant, dtype=np.float64)
    op = operating_point(y, p, threshold)
    ci = bootstrap_ci(y, p, threshold, n_boot=n_boot, seed=seed, groups=groups)
    values = {"auc": roc_auc(y, p), **{k: op[k] for k in ("sensitivity", "specificity", "balanced_accuracy")}}
    return {
        "n": len(y),
        "n_malignant": int(y.sum()),
        "bootstrap": {"resamples": n_boot, "unit": "image" if groups is None else "group",
                      **({} if groups is None else {"groups": len(set(np.asarray(groups).tolist()))})},
        **{k: {"value": round(v, 4), "ci95": [round(ci[k][0], 4), round(ci[k][1], 4)]} for k, v in values.items()},
        "threshold": float(threshold),
        "confusion": op["confusion"],
    }


def choose_threshold_per_group(y_true: np.ndarray, p_malignant: np.ndarray, groups: np.ndarray | list,
                               min_sensitivity: float = DEFAULT_MIN_SENSITIVITY) -> tuple[float, dict[str, float]]:
    """The highest threshold at which sensitivity >= `min_sensitivity` holds in *every* group (e.g. each
    validation dataset), not only on the pool: the lowest of the groups' own thresholds.

    Groups without a malignant case give no constraint. Returns (threshold, each group's own threshold).
    """
    y = np.asarray(y_true).astype(int)
    p = np.asarray(p_malignant, dtype=np.float64)
    g = np.asarray(groups)
    own: dict[str, float] = {}
    for name in dict.fromkeys(g.tolist()):
        m = g == name
        if y[m].sum() == 0:
            continue
        own[str(name)] = (choose_threshold(y[m], p[m], min_sensitivity) if len(set(y[m].tolist())) == 2
                          else float(p[m][y[m] == 1].min()))
    if not own:
        raise ValueError("no group has a malignant case: the threshold cannot be chosen")
    return min(own.values()), own


def expected_calibration_error(y_true: np.ndarray, p_malignant: np.ndarray, bins: int = 10) -> float:
    """ECE with equal-width bins on P(malignant): sum over bins of |mean p - observed rate| x bin share."""
    y = np.asarray(y_true).astype(float)
    p = np.asarray(p_malignant, dtype=np.float64)
    idx = np.minimum((p * bins).astype(int), bins - 1)
    ece = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            ece += m.mean() * abs(p[m].mean() - y[m].mean())
    return float(ece)


def reliability(y_true: np.ndarray, p_malignant: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    """Per bin: mean predicted P(malignant), observed malignant rate, count (the reliability diagram)."""
    y = np.asarray(y_true).astype(float)
    p = np.asarray(p_malignant, dtype=np.float64)
    idx = np.minimum((p * bins).astype(int), bins - 1)
    return [{"bin": b, "mean_p": float(p[idx == b].mean()), "observed": float(y[idx == b].mean()), "n": int((idx == b).sum())}
            for b in range(bins) if (idx == b).any()]


def fit_platt(y_true: np.ndarray, logit_diff: np.ndarray) -> tuple[float, float]:
    """Platt scaling on validation: P(malignant) = sigmoid(a * d + b), d = logit(malignant) - logit(benign).

    Fitted by (unregularised) logistic regression; a > 0 keeps the ranking, so AUC is unchanged.
    """
    from sklearn.linear_model import LogisticRegression

    d = np.asarray(logit_diff, dtype=np.float64).reshape(-1, 1)
    lr = LogisticRegression(C=1e6, max_iter=1000).fit(d, np.asarray(y_true).astype(int))
    return float(lr.coef_[0, 0]), float(lr.intercept_[0])


def evaluate_by(values, y_true: np.ndarray, p_malignant: np.ndarray, threshold: float, n_boot: int = 1000,
                groups: list | None = None) -> dict[str, dict[str, Any]]:
    """`evaluate` for each value of `values` (one per image: a source, a diagnosis...), in sorted order.

    A value whose images are all of one class gets its counts and the share flagged at the threshold
    (its sensitivity if malignant, 1 - its specificity if benign) instead of metrics that need both classes.
    """
    v = np.asarray(values)
    y = np.asarray(y_true).astype(int)
    p = np.asarray(p_malignant, dtype=np.float64)
    out: dict[str, dict[str, Any]] = {}
    for value in sorted(set(v.tolist())):
        m = v == value
        if len(set(y[m].tolist())) == 2:
            g = [groups[i] for i in np.flatnonzero(m)] if groups is not None else None
            out[value] = evaluate(y[m], p[m], threshold, n_boot=n_boot, groups=g)
        else:
            out[value] = {"n": int(m.sum()), "n_malignant": int(y[m].sum()), "flagged": float((p[m] >= threshold).mean())}
    return out
