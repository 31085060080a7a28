"""The model's sidecar `<model>.aux.npz`: scope arrays + CAM head, one format for exporter and device.

The manifest names it with its sha256 (`aux`); the runtime refuses a sidecar
that does not match, as it refuses a `.tflite` that does not match.
Format 2 adds the not-dermoscopy head to the scope check; format 3 the head on
the scope network's features (`net_*`, the network itself is the model's
`.scope.tflite`, named in the manifest's `scope_model`). Formats 1 (novelty
only) and 2 are still read, so a model installed before keeps working as it was.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .explain import CamHead
from .scope import DermoscopyHead, ScopeCheck, ScopeModel

SIDECAR_FORMAT = 3
READABLE_FORMATS = (1, 2, 3)


@dataclass
class Sidecar:
    scope: ScopeCheck
    cam: CamHead

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        # the oldest format that holds the check, so that apps from before a part still read a check without it
        fmt = 3 if self.scope.net is not None else 2 if self.scope.head is not None else 1
        np.savez(buf, format=np.int32(fmt), cam_weights=self.cam.weights.astype(np.float32),
                 cam_bias=np.float32(self.cam.bias), **self.scope.to_arrays())
        return buf.getvalue()

    @classmethod
    def load(cls, path: str | Path) -> Sidecar:
        """Raises ValueError with the reason when the file is not a usable sidecar."""
        try:
            with np.load(path, allow_pickle=False) as npz:
                fmt = int(npz["format"])
                if fmt not in READABLE_FORMATS:
                    raise ValueError(f"sidecar format {fmt}, this app reads {', '.join(map(str, READABLE_FORMATS))}")
                head = DermoscopyHead.from_arrays(npz) if "head_weights" in npz.files else None
                if fmt == 2 and head is None:
                    raise ValueError("format 2 sidecar without its not-dermoscopy head")
                net = DermoscopyHead.from_arrays(npz, "net_") if fmt >= 3 else None
                scope = ScopeCheck(ScopeModel.from_arrays(npz), head, net)
                cam = CamHead(np.asarray(npz["cam_weights"], np.float32), float(npz["cam_bias"]))
        except (OSError, KeyError, ValueError) as exc:
            raise ValueError(f"{exc}") from None
        if cam.weights.ndim != 1:
            raise ValueError("CAM weights must be a vector")
        if scope.novelty.mean.shape[0] != 2 * cam.weights.shape[0]:
            raise ValueError(f"scope arrays ({scope.novelty.mean.shape[0]} values) do not fit "
                             f"{cam.weights.shape[0]} feature channels")
        return cls(scope, cam)
