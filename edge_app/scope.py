"""Scope check: does an image look like the dermoscopy the model was trained on?

The score is a distance of the student's own pooled features to their training
distribution: features are standardised, projected on the principal components
of the training sample (whitened), and the score is the root mean square of
the whitened projection (a Mahalanobis distance per dimension) plus the root
mean square of what the components do not explain (the residual, scaled to the
training residual). Both parts matter: unfamiliar images either push known
directions far out or land off the training subspace.

The arrays live in the model's sidecar (`<model>.aux.npz`, named with its
sha256 in the manifest); the threshold is chosen on validation dermoscopy by
the exporter. NumPy only (no TensorFlow on the device).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

METHOD = "pca-mahalanobis+residual"
DEFAULT_COMPONENTS = 16
EPS = 1e-6


def pooled(features: np.ndarray) -> np.ndarray:
    """Feature maps (N, h, w, C) or (h, w, C) -> descriptors (N, 2C): spatial mean and spatial std.

    The mean is the model's own global average pooling; the spread adds how
    uneven the activations are across the image (a flat colour or a grid of keys
    is even in a way a lesion on skin is not).
    """
    f = np.asarray(features, np.float32)
    if f.ndim == 3:
        f = f[None]
    if f.ndim != 4:
        raise ValueError(f"expected feature maps (N, h, w, C), got shape {f.shape}")
    flat = f.reshape(f.shape[0], -1, f.shape[-1])
    return np.concatenate([flat.mean(axis=1), flat.std(axis=1)], axis=1)


@dataclass
class ScopeModel:
    mean: np.ndarray  # (D,) descriptor mean on the training sample
    scale: np.ndarray  # (D,) descriptor std on the training sample
    components: np.ndarray  # (K, D) principal axes of the standardised descriptors
    sigma: np.ndarray  # (K,) std of each projection
    residual_scale: float  # RMS residual on the training sample
    threshold: float  # scores above it are out of scope

    def score(self, features: np.ndarray) -> np.ndarray:
        """Feature maps (N, h, w, C) -> scores (N,); larger = further from the training images."""
        z = (pooled(features) - self.mean) / self.scale
        proj = z @ self.components.T
        maha = np.sqrt(np.mean((proj / self.sigma) ** 2, axis=1))
        resid = z - proj @ self.components
        rms = np.sqrt(np.mean(resid**2, axis=1)) / self.residual_scale
        return (maha + rms).astype(np.float64)

    def in_scope(self, score: float) -> bool:
        return bool(score <= self.threshold)

    def to_arrays(self, prefix: str = "scope_") -> dict[str, np.ndarray]:
        return {
            f"{prefix}mean": self.mean.astype(np.float32), f"{prefix}scale": self.scale.astype(np.float32),
            f"{prefix}components": self.components.astype(np.float32), f"{prefix}sigma": self.sigma.astype(np.float32),
            f"{prefix}residual_scale": np.float32(self.residual_scale), f"{prefix}threshold": np.float64(self.threshold),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray] | np.lib.npyio.NpzFile, prefix: str = "scope_") -> ScopeModel:
        a = {k: np.asarray(arrays[f"{prefix}{k}"]) for k in ("mean", "scale", "components", "sigma", "residual_scale", "threshold")}
        model = cls(a["mean"].astype(np.float32), a["scale"].astype(np.float32), a["components"].astype(np.float32),
                    a["sigma"].astype(np.float32), float(a["residual_scale"]), float(a["threshold"]))
        d = model.mean.shape[0]
        if model.scale.shape != (d,) or model.components.ndim != 2 or model.components.shape[1] != d \
                or model.sigma.shape != (model.components.shape[0],):
            raise ValueError("scope arrays have inconsistent shapes")
        return model


def fit(train_features: np.ndarray, n_components: int = DEFAULT_COMPONENTS) -> ScopeModel:
    """Fit on training feature maps (N, h, w, C); the threshold is left at +inf (see `calibrate`)."""
    d = pooled(train_features).astype(np.float64)
    mean = d.mean(axis=0)
    scale = d.std(axis=0) + 1e-3  # dead channels (always 0) get a finite scale
    z = (d - mean) / scale
    k = int(min(n_components, z.shape[0] - 1, z.shape[1]))
    _, s, vt = np.linalg.svd(z, full_matrices=False)
    components = vt[:k]
    sigma = s[:k] / np.sqrt(max(z.shape[0] - 1, 1)) + EPS
    resid = z - (z @ components.T) @ components
    residual_scale = float(np.sqrt(np.mean(resid**2, axis=1)).mean()) + EPS
    return ScopeModel(mean.astype(np.float32), scale.astype(np.float32), components.astype(np.float32),
                      sigma.astype(np.float32), residual_scale, float("inf"))


def calibrate(model: ScopeModel, val_features: np.ndarray, max_flagged: float = 0.03, margin: float = 0.01) -> dict[str, float]:
    """Set the threshold so that at most `max_flagged - margin` of validation images score above it.

    Returns the threshold, the share of validation images flagged and n.
    """
    if not 0 < max_flagged - margin < 1:
        raise ValueError(f"max_flagged - margin must be in (0, 1), got {max_flagged - margin}")
    scores = model.score(val_features)
    model.threshold = float(np.quantile(scores, 1.0 - (max_flagged - margin), method="higher"))
    return {"threshold": model.threshold, "val_flagged": float(np.mean(scores > model.threshold)), "n_val": len(scores)}
