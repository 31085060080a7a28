"""The model's sidecar `<model>.aux.npz`: scope arrays + CAM head, one format for exporter and device.

The manifest names it with its sha256 (`aux`); the runtime refuses a sidecar
that does not match, as it refuses a `.tflite` that does not match.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .explain import CamHead
from .scope import ScopeModel

SIDECAR_FORMAT = 1


@dataclass
class Sidecar:
    scope: ScopeModel
    cam: CamHead

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez(buf, format=np.int32(SIDECAR_FORMAT), cam_weights=self.cam.weights.astype(np.float32),
                 cam_bias=np.float32(self.cam.bias), **self.scope.to_arrays())
        return buf.getvalue()

    @classmethod
    def load(cls, path: str | Path) -> Sidecar:
        """Raises ValueError with the reason when the file is not a usable sidecar."""
        try:
            with np.load(path, allow_pickle=False) as npz:
                if int(npz["format"]) != SIDECAR_FORMAT:
                    raise ValueError(f"sidecar format {int(npz['format'])}, this app reads {SIDECAR_FORMAT}")
                scope = ScopeModel.from_arrays(npz)
                cam = CamHead(np.asarray(npz["cam_weights"], np.float32), float(npz["cam_bias"]))
        except (OSError, KeyError, ValueError) as exc:
            raise ValueError(f"{exc}") from None
        if cam.weights.ndim != 1:
            raise ValueError("CAM weights must be a vector")
        if scope.mean.shape[0] != 2 * cam.weights.shape[0]:
            raise ValueError(f"scope arrays ({scope.mean.shape[0]} values) do not fit {cam.weights.shape[0]} feature channels")
        return cls(scope, cam)
