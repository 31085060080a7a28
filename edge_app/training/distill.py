"""Student training, with or without knowledge distillation.

Targets are packed as y = [one-hot(2) | teacher logits(2)] so one Keras loss
sees both (backend-agnostic, keras.ops only):

    loss = alpha * CE(y, student) + (1 - alpha) * T^2 * KL(softmax(t/T) || softmax(s/T))

alpha = 1 is plain cross-entropy (the "no KD" student). Class imbalance: each
sample's loss is weighted by inverse class frequency (`data.class_weights`).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops


class DistillLoss(keras.losses.Loss):
    def __init__(self, alpha: float = 1.0, temperature: float = 4.0, dx_weight: float = 0.0, name: str = "distill", **kw):
        super().__init__(name=name, **kw)
        self.alpha, self.temperature, self.dx_weight = float(alpha), float(temperature), float(dx_weight)

    def call(self, y_true, y_pred):
        onehot, teacher = y_true[:, :2], y_true[:, 2:4]
        if self.dx_weight > 0:  # auxiliary diagnosis head: y_true[:, 4:] one-hot (all zero where unknown)
            dx_true, dx_pred = y_true[:, 4:], y_pred[:, 2:]
            dx_ce = -ops.sum(dx_true * ops.log_softmax(dx_pred, axis=-1), axis=-1)
        y_pred = y_pred[:, :2]
        ce = -ops.sum(onehot * ops.log_softmax(y_pred, axis=-1), axis=-1)
        if self.dx_weight > 0:
            ce = ce + self.dx_weight * dx_ce
        if self.alpha >= 1.0:
            return ce
        t = self.temperature
        pt = ops.softmax(teacher / t, axis=-1)
        kl = ops.sum(pt * (ops.log_softmax(teacher / t, axis=-1) - ops.log_softmax(y_pred / t, axis=-1)), axis=-1)
        return self.alpha * ce + (1.0 - self.alpha) * t * t * kl

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "temperature": self.temperature, "dx_weight": self.dx_weight}


def pack_targets(y: np.ndarray, teacher_logits: np.ndarray | None, dx: np.ndarray | None = None, dx_classes: int = 0) -> np.ndarray:
    """[one-hot(2) | teacher logits(2) | one-hot diagnosis(dx_classes), zeros where dx < 0]."""
    onehot = np.eye(2, dtype=np.float32)[y]
    t = np.zeros((len(y), 2), np.float32) if teacher_logits is None else teacher_logits.astype(np.float32)
    parts = [onehot, t]
    if dx_classes > 0:
        d = np.zeros((len(y), dx_classes), np.float32)
        if dx is not None:
            known = dx >= 0
            d[np.flatnonzero(known), dx[known]] = 1.0
        parts.append(d)
    return np.concatenate(parts, axis=1)


class ValAUC(keras.callbacks.Callback):
    """Validation AUC each epoch; keeps the best weights (restored at the end)."""

    def __init__(self, x_val, y_val, log=print):
        super().__init__()
        self.x_val, self.y_val, self.log = x_val, y_val, log
        self.best, self.best_epoch, self.best_weights, self.history = -1.0, -1, None, []

    def on_epoch_end(self, epoch, logs=None):
        from sklearn.metrics import roc_auc_score

        p = malignant_prob(self.model, self.x_val)
        auc = float(roc_auc_score(self.y_val, p))
        self.history.append({"epoch": epoch + 1, "val_auc": auc, **{k: float(v) for k, v in (logs or {}).items()}})
        self.log(f"  epoch {epoch + 1}: val AUC {auc:.4f}")
        if auc > self.best:
            self.best, self.best_epoch, self.best_weights = auc, epoch + 1, self.model.get_weights()

    def on_train_end(self, logs=None):
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)


def malignant_from_logits(logits: np.ndarray) -> np.ndarray:
    """P(malignant) from (N, 2) logits: a numerically stable softmax, column 1."""
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e[:, 1] / e.sum(axis=1)


def malignant_prob(logit_model, x: np.ndarray, batch_size: int = 128) -> np.ndarray:
    return malignant_from_logits(np.asarray(logit_model.predict(x, batch_size=batch_size, verbose=0), np.float64)[:, :2])


def train_student(model, x_tr, y_tr, x_val, y_val, teacher_logits=None, *, alpha=1.0, temperature=4.0,
                  epochs=10, batch_size=64, lr=2e-3, sample_weight=None, augment_params=None, seed=0, log=print,
                  dx=None, dx_classes: int = 0, dx_weight: float = 0.0):
    """Fit with AdamW + cosine decay; returns (model with best-val-AUC weights, history).

    `x_tr` is (N, S, S, 3) or (P, N, S, S, 3): P device-augmented passes, cycled through by epoch.
    """
    from .augment import Batches

    keras.utils.set_random_seed(seed)
    data = Batches(x_tr, pack_targets(y_tr, teacher_logits, dx, dx_classes), batch_size, augment=True, shuffle=True,
                   sample_weight=sample_weight, params=augment_params, seed=seed)
    steps = max(1, len(data) * epochs)
    sched = keras.optimizers.schedules.CosineDecay(lr, decay_steps=steps, alpha=0.02, warmup_target=None)
    model.compile(optimizer=keras.optimizers.AdamW(sched, weight_decay=1e-4), loss=DistillLoss(alpha, temperature, dx_weight if dx_classes else 0.0))
    cb = ValAUC(x_val, y_val, log)
    model.fit(data, epochs=epochs, callbacks=[cb], verbose=1)
    return model, {"epochs": cb.history, "best_epoch": cb.best_epoch, "best_val_auc": cb.best}
