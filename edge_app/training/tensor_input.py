"""The students' training input, kept where the model runs: the device-augmented passes as uint8 tensors.

The last GPU run trained at 250 img/s because every batch was assembled on the host (NumPy, one image at a time).
Here the passes (`data.augmented_passes`: P x N uint8 images, a quarter of float32's bytes) are copied once into the
backend's memory (the GPU under `KERAS_BACKEND=torch` with CUDA, else host memory), and each batch is gathered,
scaled to the model range and given a random flip / 90-degree turn there (and, if asked, mixup), with keras.ops only (any
backend).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import keras
import numpy as np
from keras import ops


def resolve_precision(precision: str) -> str:
    """"auto" -> "mixed_bfloat16" when the backend sees a GPU, else "float32"; any other value as given."""
    if precision != "auto":
        return precision
    return "mixed_bfloat16" if gpu_available() else "float32"


def gpu_available() -> bool:
    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        return bool(torch.cuda.is_available())
    if backend == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    return False


class ResidentPasses:
    """Epochs of (x, y, sample_weight) batches from uint8 passes held as backend tensors.

    Epoch e uses pass e mod P, in a seeded random order; each image gets one of the 8 flips/rotations of the square
    (a transpose, a left-right and an up-down flip, each with probability 1/2). x = (u - 127) / 128, float32.
    """

    def __init__(self, passes: np.ndarray, targets: np.ndarray, sample_weight: np.ndarray | None, batch_size: int, seed: int = 0,
                 mixup_alpha: float = 0.0):
        if passes.ndim != 5 or passes.dtype != np.uint8:
            raise ValueError(f"expected uint8 passes (P, N, S, S, 3), got {passes.dtype} {passes.shape}")
        self.n, self.batch_size, self.seed, self.mixup_alpha = passes.shape[1], batch_size, seed, mixup_alpha
        self.passes = [ops.convert_to_tensor(np.ascontiguousarray(p)) for p in passes]
        self.targets = ops.convert_to_tensor(np.asarray(targets, np.float32))
        w = np.ones(self.n, np.float32) if sample_weight is None else np.asarray(sample_weight, np.float32)
        self.weights = ops.convert_to_tensor(w)

    def __len__(self) -> int:
        return (self.n + self.batch_size - 1) // self.batch_size

    def epoch(self, e: int) -> Iterator[tuple]:
        rng = np.random.default_rng([self.seed, e])
        order = rng.permutation(self.n).astype(np.int32)
        source = self.passes[e % len(self.passes)]
        for i in range(0, self.n, self.batch_size):
            idx = ops.convert_to_tensor(order[i : i + self.batch_size])
            x = (ops.cast(ops.take(source, idx, axis=0), "float32") - 127.0) / 128.0
            x = dihedral(x, rng.random((3, len(order[i : i + self.batch_size]))) < 0.5)
            y, w = ops.take(self.targets, idx, axis=0), ops.take(self.weights, idx, axis=0)
            if self.mixup_alpha > 0:
                x, y, w = mixup(x, y, w, float(rng.beta(self.mixup_alpha, self.mixup_alpha)))
            yield x, y, w


def mixup(x, y, w, lam: float):
    """Each image blended with its neighbour in the batch (x, targets and weights alike), lam = the own share."""
    lam = max(lam, 1.0 - lam)  # the own image keeps the larger share, so its label stays the one it mostly shows
    return (lam * x + (1 - lam) * ops.roll(x, 1, axis=0), lam * y + (1 - lam) * ops.roll(y, 1, axis=0),
            lam * w + (1 - lam) * ops.roll(w, 1, axis=0))


def dihedral(x, flags: np.ndarray):
    """Per image: transpose, flip left-right, flip up-down where flags[0], flags[1], flags[2] (B,) are True."""
    t, lr, ud = (ops.reshape(ops.convert_to_tensor(f), (-1, 1, 1, 1)) for f in flags)
    x = ops.where(t, ops.transpose(x, (0, 2, 1, 3)), x)
    x = ops.where(lr, ops.flip(x, axis=2), x)
    return ops.where(ud, ops.flip(x, axis=1), x)


@contextmanager
def dtype_policy(precision: str) -> Iterator[str]:
    """Build and train inside with this Keras dtype policy ("auto": see `resolve_precision`); the global policy is put back
    after, so the exported model (built afresh) is float32."""
    before = keras.config.dtype_policy()
    chosen = resolve_precision(precision)
    keras.config.set_dtype_policy(chosen)
    try:
        yield chosen
    finally:
        keras.config.set_dtype_policy(before)
