"""ROC curve, confusion matrix and reliability diagram of the test split, as PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def save_plots(out_dir: Path, y: np.ndarray, curves: dict[str, np.ndarray], p_shipped: np.ndarray, threshold: float) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_auc_score, roc_curve

    from ..metrics import operating_point

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []

    fig, ax = plt.subplots(figsize=(5, 5))
    for name, p in curves.items():
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(y, p):.3f})")
    op = operating_point(y, p_shipped, threshold)
    ax.plot(1 - op["specificity"], op["sensitivity"], "ko", label=f"shipped threshold {threshold:.3f}")
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC, lesion-grouped test split")
    ax.legend(loc="lower right", fontsize=8)
    paths.append(_save(fig, out_dir / "roc.png"))

    c = op["confusion"]
    mat = np.array([[c["tn"], c["fp"]], [c["fn"], c["tp"]]])
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.imshow(mat, cmap="Blues")
    for i in range(2):
        for j in range(2):
            dark = mat[i, j] > mat.max() / 2
            ax.text(j, i, str(mat[i, j]), ha="center", va="center", color="white" if dark else "black", fontsize=14)
    ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=["benign", "malignant"], yticklabels=["benign", "malignant"],
           xlabel="predicted", ylabel="true", title=f"Confusion at threshold {threshold:.3f}")
    paths.append(_save(fig, out_dir / "confusion.png"))

    bins = np.linspace(0, 1, 11)
    idx = np.clip(np.digitize(p_shipped, bins) - 1, 0, 9)
    conf = [p_shipped[idx == b].mean() if (idx == b).any() else np.nan for b in range(10)]
    frac = [y[idx == b].mean() if (idx == b).any() else np.nan for b in range(10)]
    count = [int((idx == b).sum()) for b in range(10)]
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.plot(conf, frac, "o-", label="shipped student fp16")
    for x_, y_, n in zip(conf, frac, count):
        if n:
            ax.annotate(str(n), (x_, y_), fontsize=7, textcoords="offset points", xytext=(3, -10))
    ax.set(xlabel="predicted P(malignant)", ylabel="observed fraction malignant", title="Reliability (test; n per bin)",
           xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper left", fontsize=8)
    paths.append(_save(fig, out_dir / "reliability.png"))
    return paths


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
