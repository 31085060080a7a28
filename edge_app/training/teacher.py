"""The teacher: each backbone fine-tuned on the training split (`teacher_train=
finetune`: the late stages of an ImageNet Lite, or a whole paper-family network
from scratch) or left frozen (`frozen`), its pooled features cached once, a head
per backbone, and a fusion of the three, chosen on validation:

- "logit_avg": average of the per-backbone heads' logits (linear probes,
  logistic regression on standardised features, C picked on validation);
- "concat_mlp": the three feature vectors concatenated, one MLP head (Keras).

Teacher logits for the training images come from heads fitted out-of-fold (5
lesion-grouped folds). A fine-tuned backbone has itself seen those images (no
CPU time to fine-tune it five times), so they are somewhat more confident than
its logits on new images; distillation at T > 1 softens them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import layers
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from tqdm import tqdm

from ..metrics import roc_auc
from .backbones import lite_feature_extractor, paper_feature_extractor
from .distill import malignant_from_logits, train_student


def feature_extractor(family: str, which: str, size: int, input_size: int, weights_dir=None, paper_weights=None, tiny=False,
                      freeze_stages: int | None = None):
    """Cached-tensor (input_size px) -> resize to the backbone's size -> pooled features.

    freeze_stages=None: frozen (features only). Otherwise trainable for fine-tuning:
    a Lite backbone keeps its stem and first `freeze_stages` stages frozen; a paper
    backbone is trained whole (from random init unless `paper_weights`).
    """
    base = (lite_feature_extractor(weights_dir, which, size, freeze_stages) if family == "lite"
            else paper_feature_extractor(which, size, paper_weights, tiny=tiny))
    inp = keras.Input((input_size, input_size, 3))
    x = inp if size == input_size else layers.Resizing(size, size, interpolation="bilinear")(inp)
    model = keras.Model(inp, base(x), name=f"{which}_at_{size}")
    if freeze_stages is None:
        model.trainable = False
    return model


def finetune_backbone(features, x_tr, y_tr, x_va, y_va, *, epochs: int, lr: float, batch_size: int, sample_weight, seed: int,
                      log=print, dropout: float = 0.3):
    """Backbone + dropout + dense(2), trained end to end with class-weighted CE on augmented batches.

    Same loop as the student (AdamW, cosine LR, best epoch by validation AUC).
    Returns (trained classifier, history); `features` shares its weights.
    """
    keras.utils.set_random_seed(seed)
    logits = layers.Dense(2, name=f"{features.name}_logits")(layers.Dropout(dropout)(features.output))
    clf = keras.Model(features.input, logits, name=f"{features.name}_classifier")
    log(f"  fine-tuning {features.name}: {sum(int(np.prod(w.shape)) for w in clf.trainable_weights):,} of {clf.count_params():,} "
        f"parameters trainable, {epochs} epochs")
    return train_student(clf, x_tr, y_tr, x_va, y_va, None, alpha=1.0, epochs=epochs, batch_size=batch_size, lr=lr,
                         sample_weight=sample_weight, seed=seed, log=log)


def cached_features(extractor, x: np.ndarray, key: str, cache_dir: Path | None, batch_size: int = 32,
                    desc: str = "") -> np.ndarray:
    path = None
    if cache_dir is not None:
        h = hashlib.sha256(key.encode()).hexdigest()[:16]
        path = Path(cache_dir) / f"feat_{h}.npy"
        if path.is_file():
            return np.load(path)
    chunks = []
    for i in tqdm(range(0, len(x), batch_size), desc=desc, unit="batch", mininterval=5.0):
        chunks.append(np.asarray(extractor.predict_on_batch(x[i : i + batch_size]), np.float32))
    f = np.concatenate(chunks)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, f)
    return f


def _logit2(d: np.ndarray) -> np.ndarray:
    """Binary decision value -> two-class logits (0, d): softmax gives sigmoid(d)."""
    return np.stack([np.zeros_like(d), d], axis=1).astype(np.float32)


def fit_linear(f_tr, y_tr, f_va, y_va, Cs=(0.003, 0.01, 0.03, 0.1)):
    """Standardise + class-balanced logistic regression, C chosen on validation AUC."""
    best = None
    for C in Cs:
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, class_weight="balanced", max_iter=2000))
        clf.fit(f_tr, y_tr)
        auc = roc_auc_score(y_va, clf.decision_function(f_va))
        if best is None or auc > best[1]:
            best = (C, auc)
    return best[0]


def linear_logits(f_tr, y_tr, f_eval: list[np.ndarray], C: float) -> list[np.ndarray]:
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, class_weight="balanced", max_iter=2000))
    clf.fit(f_tr, y_tr)
    return [_logit2(clf.decision_function(f)) for f in f_eval]


def mlp_logits(f_tr, y_tr, f_eval: list[np.ndarray], epochs: int = 60, seed: int = 0) -> list[np.ndarray]:
    """Concatenated features -> standardise -> Dense(256) -> Dropout -> Dense(2) logits (Keras)."""
    keras.utils.set_random_seed(seed)
    mu, sd = f_tr.mean(0), f_tr.std(0) + 1e-6
    norm = lambda f: ((f - mu) / sd).astype(np.float32)
    inp = keras.Input((f_tr.shape[1],))
    x = layers.Dropout(0.3)(inp)
    x = layers.Dense(256, activation="relu", kernel_regularizer=keras.regularizers.L2(1e-3))(x)
    x = layers.Dropout(0.5)(x)
    out = layers.Dense(2)(x)
    model = keras.Model(inp, out)
    model.compile(keras.optimizers.Adam(1e-3), keras.losses.CategoricalCrossentropy(from_logits=True))
    n = np.bincount(y_tr, minlength=2)
    cw = {c: len(y_tr) / (2.0 * n[c]) for c in range(2)}
    model.fit(norm(f_tr), np.eye(2, dtype=np.float32)[y_tr], epochs=epochs, batch_size=128, class_weight=cw, verbose=0)
    return [np.asarray(model.predict(norm(f), verbose=0, batch_size=512), np.float32) for f in f_eval]


def out_of_fold(fit_predict, f_tr, y_tr, groups, k: int = 5, seed: int = 0) -> np.ndarray:
    """Training-set logits, each from a head that did not see that image's lesion."""
    out = np.zeros((len(y_tr), 2), np.float32)
    for tr, te in StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed).split(f_tr, y_tr, groups):
        out[te] = fit_predict(f_tr[tr], y_tr[tr], [f_tr[te]])[0]
    return out


def fuse(feats: dict[str, dict[str, np.ndarray]], y: dict[str, np.ndarray], groups: np.ndarray, *, head_epochs: int, seed: int,
         log=print) -> dict[str, Any]:
    """Per-backbone linear heads, then the two fusions (logit average; concatenated features + MLP), the better on validation.

    Training-split logits are out-of-fold (5 lesion-grouped folds), so a student distilled from them never sees a
    teacher that has memorised its own training images. Returns {"heads", "fusion", "teacher", "logits", "avg", "mlp"}.
    """
    backbones = list(feats)
    results: dict[str, dict] = {}
    logits: dict[str, dict[str, np.ndarray]] = {}
    for which in backbones:
        f = feats[which]
        C = fit_linear(f["train"], y["train"], f["val"], y["val"])
        fp = lambda a, b, ev, C=C: linear_logits(a, b, ev, C)
        va, te = fp(f["train"], y["train"], [f["val"], f["test"]])
        logits[which] = {"val": va, "test": te, "train": out_of_fold(fp, f["train"], y["train"], groups, seed=seed)}
        results[which] = {"C": C, "val_auc": roc_auc(y["val"], malignant_from_logits(va))}
        log(f"{which}: val AUC {results[which]['val_auc']:.4f} (C={C})")
    avg = {s: np.mean([logits[w][s] for w in backbones], axis=0) for s in ("train", "val", "test")}
    results["logit_avg"] = {"val_auc": roc_auc(y["val"], malignant_from_logits(avg["val"]))}
    cat = {s: np.concatenate([feats[w][s] for w in backbones], axis=1) for s in ("train", "val", "test")}
    fp = lambda a, b, ev: mlp_logits(a, b, ev, epochs=head_epochs, seed=seed)
    va, te = fp(cat["train"], y["train"], [cat["val"], cat["test"]])
    mlp = {"val": va, "test": te, "train": out_of_fold(fp, cat["train"], y["train"], groups, seed=seed)}
    results["concat_mlp"] = {"val_auc": roc_auc(y["val"], malignant_from_logits(va))}
    log(f"fusion: logit_avg val AUC {results['logit_avg']['val_auc']:.4f}, concat_mlp {results['concat_mlp']['val_auc']:.4f}")
    chosen = "concat_mlp" if results["concat_mlp"]["val_auc"] > results["logit_avg"]["val_auc"] else "logit_avg"
    return {"heads": results, "fusion": chosen, "teacher": mlp if chosen == "concat_mlp" else avg, "logits": logits,
            "avg": avg, "mlp": mlp}
