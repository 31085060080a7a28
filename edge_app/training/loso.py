"""Leave-one-source-out: how the student does on a dermoscopy source it never saw (the step is `pipeline.step_loso`).

The held-out source is scored on its training and validation images, never its test split, so that choices made by
looking at these figures (which sources to keep, their weights, the levers) leave every test split unseen.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..metrics import evaluate
from .data import Table, preprocess_table
from .evaluation import per_diagnosis
from .run_state import Run

RULE = ("fitted on the other sources' training splits (best epoch on their validation), threshold = the highest with "
        "sensitivity >= min_sensitivity on each other source's validation split; the held-out source scored on its "
        "training + validation images (its test split unseen); 95% CIs from a bootstrap over its lesion groups")


def held_out_table(splits: dict[str, Table], source: str) -> Table:
    """The held-out source's training and validation rows (its test rows left out)."""
    rows = [r for s in ("train", "val") for r in splits[s].rows if r.get("dataset") == source]
    return Table(rows, splits["train"].columns)


def held_out_tensors(run: Run, table: Table) -> np.ndarray:
    """Its images through the device preprocessing (not augmented), cached like the splits' tensors."""
    return preprocess_table(table, run.data, run.preprocessor, run.cache_dir, desc=f"held-out {table.rows[0]['dataset']}")


def fold_report(scored: Table, p: np.ndarray, threshold: float, per_source: dict[str, float], hist: dict[str, Any],
                n_train: int, n_boot: int) -> dict[str, Any]:
    """AUC, sensitivity and specificity (with 95% CIs) of the held-out source at the others' threshold."""
    if len(set(scored.y.tolist())) < 2:
        raise SystemExit(f"loso: held-out source {scored.rows[0]['dataset']} has one class only among its train+val images")
    rep = evaluate(scored.y, p, threshold, n_boot=n_boot, groups=scored.groups)
    return {**rep, "threshold": threshold, "threshold_per_other_source": per_source, "n_train": n_train,
            "val_auc_other_sources": hist["best_val_auc"], "best_epoch": hist["best_epoch"],
            "train_img_per_s": hist["train_img_per_s"], "dx": per_diagnosis(scored, p, threshold)}


def fold_line(r: dict[str, Any]) -> str:
    """One line of a fold's figures."""
    return (f"n {r['n']} ({r['n_malignant']} malignant), AUC {_ci(r['auc'])}, sensitivity {_ci(r['sensitivity'])}, "
            f"specificity {_ci(r['specificity'])} at {r['threshold']:.4f}")


def _ci(d: dict[str, Any]) -> str:
    return f"{d['value']:.3f} [{d['ci95'][0]:.3f}, {d['ci95'][1]:.3f}]"
