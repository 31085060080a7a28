"""Scope check: does an image look like the dermoscopy the model was trained on?

Two parts read the student's own pooled features (spatial mean + std of the last
feature map), and an image is out of scope when either says so:

- **novelty** (`ScopeModel`): a distance to the training distribution. Features
  are standardised, projected on the principal components of the training
  sample (whitened); the score is the root mean square of the whitened
  projection (a Mahalanobis distance per dimension) plus the root mean square of
  what the components do not explain (the residual, scaled to the training
  residual). It needs no examples of what is out, so it catches the unforeseen
  (flat colours, noise, text), but it is blind to pictures whose features sit
  among dermoscopy's: a model trained to ignore how a picture was taken maps a
  skin photo without a dermatoscope close to a dermoscopy image.
- **not-dermoscopy head** (`DermoscopyHead`): a linear score on the same
  standardised features, fitted (logistic regression, `training/scope_fit.py`)
  to tell dermoscopy (as is and as other devices would take it) from pictures
  that are not dermoscopy: skin photos taken without a dermatoscope, real
  lesions photographed in a field of skin, objects, text. It finds the few
  directions along which those differ, which a distance weighting all
  directions alike drowns.

- **the scope network's head** (`net`, sidecar format 3): the same kind of linear
  score, on the pooled features of a network of its own (`edge_app/scope_net.py`,
  ImageNet EfficientNet-Lite0 on the decoded frame as it is, not on the six
  stages): what ImageNet knows about photographs (skin surface, body parts,
  backgrounds, lighting) tells a phone photo from dermoscopy where the student's
  features, trained to ignore how a picture was taken, cannot.

`ScopeCheck` combines them: with a head, the score is the largest of the
parts' margins over their own thresholds, so it is out of scope above 0; a
sidecar from before the head (format 1) scores with the novelty part alone
against its own threshold. A result carries its score with the threshold it was
compared with (`scope_threshold`); a record keeps the score and the outcome.

The arrays live in the model's sidecar (`<model>.aux.npz`, named with its
sha256 in the manifest); the thresholds are chosen on validation dermoscopy.
NumPy only (no TensorFlow or scikit-learn on the device).
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
        return self.score_descriptors(pooled(features))

    def score_descriptors(self, descriptors: np.ndarray) -> np.ndarray:
        """Pooled descriptors (N, 2C) -> scores (N,)."""
        z = (np.asarray(descriptors, np.float32) - self.mean) / self.scale
        proj = z @ self.components.T
        maha = np.sqrt(np.mean((proj / self.sigma) ** 2, axis=1))
        resid = z - proj @ self.components
        rms = np.sqrt(np.mean(resid**2, axis=1)) / self.residual_scale
        return (maha + rms).astype(np.float64)

    def to_arrays(self, prefix: str = "scope_") -> dict[str, np.ndarray]:
        return {
            f"{prefix}mean": self.mean.astype(np.float32), f"{prefix}scale": self.scale.astype(np.float32),
            f"{prefix}components": self.components.astype(np.float32), f"{prefix}sigma": self.sigma.astype(np.float32),
            f"{prefix}residual_scale": np.float32(self.residual_scale), f"{prefix}threshold": np.float64(self.threshold),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray] | np.lib.npyio.NpzFile, prefix: str = "scope_") -> ScopeModel:
        keys = ("mean", "scale", "components", "sigma", "residual_scale", "threshold")
        a = {k: np.asarray(arrays[f"{prefix}{k}"]) for k in keys}
        model = cls(a["mean"].astype(np.float32), a["scale"].astype(np.float32), a["components"].astype(np.float32),
                    a["sigma"].astype(np.float32), float(a["residual_scale"]), float(a["threshold"]))
        d = model.mean.shape[0]
        if model.scale.shape != (d,) or model.components.ndim != 2 or model.components.shape[1] != d \
                or model.sigma.shape != (model.components.shape[0],):
            raise ValueError("scope arrays have inconsistent shapes")
        return model


def fit_descriptors(descriptors: np.ndarray, n_components: int = DEFAULT_COMPONENTS) -> ScopeModel:
    """Fit on training descriptors (`pooled` feature maps, (N, 2C)); the threshold is left at +inf (set it with
    `quantile_threshold` on validation scores)."""
    d = np.asarray(descriptors, np.float64)
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


def quantile_threshold(val_scores: np.ndarray, share: float) -> float:
    """The threshold above which `share` of the validation scores lie (at most)."""
    return float(np.quantile(np.asarray(val_scores, np.float64), 1.0 - share, method="higher"))


@dataclass
class DermoscopyHead:
    """A linear "not dermoscopy" score on standardised descriptors (a logistic regression's logit)."""

    mean: np.ndarray  # (D,)
    scale: np.ndarray  # (D,)
    weights: np.ndarray  # (D,)
    bias: float
    threshold: float  # logits above it are not dermoscopy

    def score_descriptors(self, descriptors: np.ndarray) -> np.ndarray:
        z = (np.asarray(descriptors, np.float32) - self.mean) / self.scale
        return (z @ self.weights + self.bias).astype(np.float64)

    def to_arrays(self, prefix: str = "head_") -> dict[str, np.ndarray]:
        return {f"{prefix}mean": self.mean.astype(np.float32), f"{prefix}scale": self.scale.astype(np.float32),
                f"{prefix}weights": self.weights.astype(np.float32), f"{prefix}bias": np.float64(self.bias),
                f"{prefix}threshold": np.float64(self.threshold)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray] | np.lib.npyio.NpzFile, prefix: str = "head_") -> DermoscopyHead:
        a = {k: np.asarray(arrays[f"{prefix}{k}"]) for k in ("mean", "scale", "weights", "bias", "threshold")}
        head = cls(a["mean"].astype(np.float32), a["scale"].astype(np.float32), a["weights"].astype(np.float32),
                   float(a["bias"]), float(a["threshold"]))
        if head.mean.ndim != 1 or head.scale.shape != head.mean.shape or head.weights.shape != head.mean.shape:
            raise ValueError("not-dermoscopy head arrays have inconsistent shapes")
        return head


@dataclass
class ScopeCheck:
    """Novelty distance + (optionally) the not-dermoscopy head on the student's features and the head on the
    scope network's features; see the module docstring."""

    novelty: ScopeModel
    head: DermoscopyHead | None = None
    net: DermoscopyHead | None = None  # reads the scope network's pooled features

    def __post_init__(self) -> None:
        if self.head is not None and self.head.mean.shape != self.novelty.mean.shape:
            raise ValueError(f"the not-dermoscopy head reads {self.head.mean.shape[0]} values, the novelty part "
                             f"{self.novelty.mean.shape[0]}")

    @property
    def threshold(self) -> float:
        return float(self.novelty.threshold) if self.head is None and self.net is None else 0.0

    def parts(self, features: np.ndarray, net_features: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Each part's own score (N,), for diagnostics and the benchmark."""
        d = pooled(features)
        out = {"novelty": self.novelty.score_descriptors(d)}
        if self.head is not None:
            out["not_dermoscopy"] = self.head.score_descriptors(d)
        if self.net is not None:
            out["scope_net"] = self.net.score_descriptors(self._net_input(net_features, d.shape[0]))
        return out

    def _net_input(self, net_features: np.ndarray | None, n: int) -> np.ndarray:
        if net_features is None:
            raise ValueError("this scope check needs the scope network's features (the model's .scope.tflite)")
        f = np.asarray(net_features, np.float32).reshape(n, -1)
        if f.shape[1] != self.net.mean.shape[0]:
            raise ValueError(f"the scope network gives {f.shape[1]} features, its head reads {self.net.mean.shape[0]}")
        return f

    def score(self, features: np.ndarray, net_features: np.ndarray | None = None) -> np.ndarray:
        """Feature maps (+ the scope network's features when the check has its head) -> scores (N,);
        out of scope above `threshold`."""
        return self.score_descriptors(pooled(features), net_features)

    def score_descriptors(self, descriptors: np.ndarray, net_features: np.ndarray | None = None) -> np.ndarray:
        novelty = self.novelty.score_descriptors(descriptors)
        if self.head is None and self.net is None:
            return novelty
        margins = [novelty - self.novelty.threshold]
        if self.head is not None:
            margins.append(self.head.score_descriptors(descriptors) - self.head.threshold)
        if self.net is not None:
            margins.append(self.net.score_descriptors(self._net_input(net_features, len(novelty))) - self.net.threshold)
        return np.max(np.stack(margins), axis=0)

    def in_scope(self, score: float) -> bool:
        return bool(score <= self.threshold)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {**self.novelty.to_arrays(), **(self.head.to_arrays() if self.head is not None else {}),
                **(self.net.to_arrays("net_") if self.net is not None else {})}
