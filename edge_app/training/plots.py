"""ROC curve, confusion matrix and reliability diagram of the test split, as PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def save_plots(out_dir: Path, y: np.ndarray, curves: dict[str, np.ndarray], p_shipped: np.ndarray,
               threshold: float) -> list[Path]:
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

    return paths


def save_reliability(path: Path, y: np.ndarray, curves: dict[str, np.ndarray]) -> Path:
    """Reliability diagram: mean predicted P(malignant) vs observed rate per bin, with ECE, for each curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..metrics import expected_calibration_error, reliability

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], ":", color="grey")
    for name, p in curves.items():
        pts = reliability(y, p)
        ax.plot([b["mean_p"] for b in pts], [b["observed"] for b in pts], "o-",
                label=f"{name} (ECE {expected_calibration_error(y, p):.3f})")
    ax.set(xlabel="predicted P(malignant)", ylabel="observed fraction malignant", title="Reliability (lesion-grouped test split)",
           xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper left", fontsize=8)
    return _save(fig, path)


def save_stage_grid(path: Path, images: list[np.ndarray], preprocessor) -> Path:
    """Each image (row) after each of the six stages (columns), as the model sees it."""
    import matplotlib

    matplotlib.use("Agg")
    import cv2
    import matplotlib.pyplot as plt

    from ..preprocess import STAGES

    fig, axes = plt.subplots(len(images), len(STAGES) + 1, figsize=(1.3 * (len(STAGES) + 1), 1.3 * len(images)))
    for r, im in enumerate(images):
        steps = preprocessor.stage_outputs(im)
        axes[r, 0].imshow(cv2.cvtColor(im, cv2.COLOR_BGR2RGB))
        for c, stage in enumerate(STAGES):
            axes[r, c + 1].imshow(steps[stage])
        for c, title in enumerate(("input",) + STAGES):
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
            if r == 0:
                axes[r, c].set_title(title, fontsize=8)
    return _save(fig, path, dpi=80)


def _save(fig, path: Path, dpi: int = 110) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
