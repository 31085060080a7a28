"""Student training, with or without knowledge distillation.

Targets are packed as y = [one-hot(2) | teacher logits(2)] so one Keras loss
sees both (backend-agnostic, keras.ops only):

    loss = alpha * CE(y, student) + (1 - alpha) * T^2 * KL(softmax(t/T) || softmax(s/T))

alpha = 1 is plain cross-entropy (the "no KD" student). Class imbalance: each
sample's loss is weighted by inverse class frequency (`data.class_weights`).
"""

from __future__ import annotations

import time

import keras
import numpy as np
from keras import ops
from sklearn.metrics import roc_auc_score

from .augment import Batches
from .tensor_input import ResidentPasses


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


def pack_targets(y: np.ndarray, teacher_logits: np.ndarray | None, dx: np.ndarray | None = None,
                 dx_classes: int = 0) -> np.ndarray:
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


def malignant_from_logits(logits: np.ndarray) -> np.ndarray:
    """P(malignant) from (N, 2) logits: a numerically stable softmax, column 1."""
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e[:, 1] / e.sum(axis=1)


def malignant_prob(logit_model, x: np.ndarray, batch_size: int = 128) -> np.ndarray:
    return malignant_from_logits(np.asarray(logit_model.predict(x, batch_size=batch_size, verbose=0), np.float64)[:, :2])


def train_student(model, x_tr, y_tr, x_val, y_val, teacher_logits=None, *, alpha=1.0, temperature=4.0,
                  epochs=10, batch_size=64, lr=2e-3, sample_weight=None, augment_params=None, seed=0, log=print,
                  dx=None, dx_classes: int = 0, dx_weight: float = 0.0, mixup_alpha: float = 0.0, ema_momentum: float = 0.0):
    """Fit with AdamW + cosine decay; returns (model with the best-validation-AUC weights, history).

    `x_tr` is either the uint8 device-augmented passes (P, N, S, S, 3), held as backend tensors
    (`tensor_input.ResidentPasses`: the students), or float32 tensors (N, S, S, 3) batched on the host
    by `augment.Batches` with `augment_params` (the input-size study, the teacher's fine-tuning).
    The history records the training throughput (images/s, after the first epoch's tracing).
    `mixup_alpha` > 0 blends batch neighbours (resident passes only); `ema_momentum` > 0 keeps an exponential moving
    average of the weights, and validation (hence the best epoch and the returned model) reads the averaged weights.
    """
    keras.utils.set_random_seed(seed)
    targets = pack_targets(y_tr, teacher_logits, dx, dx_classes)
    if x_tr.ndim == 5:
        resident = ResidentPasses(x_tr, targets, sample_weight, batch_size, seed, mixup_alpha=mixup_alpha)
        n_batches, epoch_batches = len(resident), resident.epoch
    else:
        host = Batches(x_tr, targets, batch_size, augment=True, shuffle=True, sample_weight=sample_weight, params=augment_params,
                       seed=seed)
        n_batches, epoch_batches = len(host), host.epoch
    sched = keras.optimizers.schedules.CosineDecay(lr, decay_steps=max(1, n_batches * epochs), alpha=0.02)
    optimizer = keras.optimizers.AdamW(sched, weight_decay=1e-4, use_ema=ema_momentum > 0, ema_momentum=ema_momentum or 0.99)
    model.compile(optimizer=optimizer, loss=DistillLoss(alpha, temperature, dx_weight if dx_classes else 0.0))
    n_images = len(y_tr)
    history, best, best_epoch, best_weights, seconds = [], -1.0, -1, None, []
    for e in range(epochs):
        t0 = time.perf_counter()
        for batch in epoch_batches(e):
            loss = model.train_on_batch(*batch)
        seconds.append(time.perf_counter() - t0)
        live = model.get_weights() if ema_momentum > 0 else None
        if live is not None:
            model.optimizer.finalize_variable_values(model.trainable_variables)  # the averaged weights, for validation
        auc = float(roc_auc_score(y_val, malignant_prob(model, x_val, batch_size=max(128, batch_size))))
        history.append({"epoch": e + 1, "val_auc": auc, "loss": float(np.asarray(loss).ravel()[0]),
                        "seconds": round(seconds[-1], 2), "img_per_s": round(n_images / seconds[-1], 1)})
        log(f"  epoch {e + 1}: loss {history[-1]['loss']:.4f}, val AUC {auc:.4f}, {history[-1]['img_per_s']:.0f} img/s")
        if auc > best:
            best, best_epoch, best_weights = auc, e + 1, model.get_weights()
        if live is not None:
            model.set_weights(live)
    if best_weights is not None:
        model.set_weights(best_weights)
    steady = seconds[1:] or seconds
    return model, {"epochs": history, "best_epoch": best_epoch, "best_val_auc": best,
                   "train_img_per_s": round(n_images * len(steady) / sum(steady), 1), "train_seconds": round(sum(seconds), 1),
                   "batch_size": batch_size, "input": "resident uint8 passes" if x_tr.ndim == 5 else "host batches",
                   "mixup_alpha": mixup_alpha, "ema_momentum": ema_momentum}
