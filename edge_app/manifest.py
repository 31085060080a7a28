"""The model manifest: the contract between the exporter and the device.

`models/<name>.json` sits beside `models/<name>.tflite`. The exporter writes it
(`edge_app.training.export`), the runtime reads and checks it
(`edge_app.runtime`). Both use this module, so the format has one definition.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .fileio import sha256_file  # noqa: F401  (one implementation, in fileio; runtime and export import it from here)

MANIFEST_FORMAT = 2  # 2: may name a scope network (`scope_model`); format 1 manifests are still read
READABLE_FORMATS = (1, 2)
SELFTEST_TOLERANCE = 0.01  # max abs difference in output probabilities
SELFTEST_PATTERNS = ("zeros", "gradient", "rings", "lesion")


class ManifestError(ValueError):
    """The manifest is missing, unreadable, or does not match its model file."""


@dataclass
class Manifest:
    name: str
    version: str
    labels: list[str]
    positive_label: str
    input: dict[str, Any]  # {"shape": [1, H, W, 3], "dtype": "float32", "range": [-1, 1], "channel_order": "RGB"}
    preprocessing: dict[str, Any]  # Preprocessor.describe()
    threshold: float
    threshold_rule: str
    sha256: str
    selftest: dict[str, Any]  # {"tolerance": float, "cases": [{"pattern": str, "output": [...]}]}
    converter: dict[str, Any] = field(default_factory=dict)  # {"tensorflow": "2.21.0", "quantization": "float16"}
    provenance: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    training_command: str = ""
    created_at: str = ""
    format: int = MANIFEST_FORMAT
    # The sidecar beside the .tflite (scope arrays + CAM head): {"file": "<name>.aux.npz", "sha256": ...};
    # empty for a model without a features output (scope and heatmap then unavailable).
    aux: dict[str, Any] = field(default_factory=dict)
    scope: dict[str, Any] = field(default_factory=dict)  # {"method", "threshold", "val_flagged", "n_train", "n_val", ...}
    explain: dict[str, Any] = field(default_factory=dict)  # {"method": "cam", "feature_shape", "temperature", ...}
    # The scope network beside the .tflite (`<name>.scope.tflite`, edge_app/scope_net.py): {"file", "sha256",
    # "size_bytes", "input_size", "features", ...}; empty when the scope check reads the student's features only.
    scope_model: dict[str, Any] = field(default_factory=dict)

    @property
    def input_size(self) -> int:
        return int(self.input["shape"][1])

    def to_dict(self) -> dict[str, Any]:
        """Format 1 (without the `scope_model` key) when there is no scope network: readable by apps from before it."""
        d = asdict(self)
        if not self.scope_model:
            d.pop("scope_model")
            d["format"] = 1
        else:
            d["format"] = 2
        return d

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Manifest:
        path = Path(path)
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise ManifestError(
                f"model manifest {path} is missing: every .tflite needs its .json beside it; re-export or restore it"
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ManifestError(f"model manifest {path} is unreadable ({exc}); re-export or restore it") from None
        return cls.loads(text, path)

    @classmethod
    def loads(cls, text: str | bytes, path: str | Path = "<manifest>") -> Manifest:
        """Parse and check a manifest's text (`path` only names it in messages)."""
        try:
            data = json.loads(text)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ManifestError(f"model manifest {path} is unreadable ({exc}); re-export or restore it") from None
        if not isinstance(data, dict):
            raise ManifestError(f"model manifest {path} is not a JSON object")
        if data.get("format") not in READABLE_FORMATS:
            raise ManifestError(f"model manifest {path} has format {data.get('format')!r}; this app reads formats "
                                f"{', '.join(map(str, READABLE_FORMATS))}")
        known = set(cls.__dataclass_fields__)
        required = {"name", "version", "labels", "positive_label", "input", "preprocessing", "threshold", "threshold_rule",
                    "sha256", "selftest"}
        missing = sorted(required - set(data))
        if missing:
            raise ManifestError(f"model manifest {path} lacks fields {missing}; re-export the model")
        m = cls(**{k: v for k, v in data.items() if k in known})
        if m.positive_label not in m.labels:
            raise ManifestError(f"model manifest {path}: positive label {m.positive_label!r} is not one of {m.labels}")
        if not 0.0 <= float(m.threshold) <= 1.0:
            raise ManifestError(f"model manifest {path}: threshold {m.threshold} is not a probability")
        return m


def manifest_path_for(model_path: str | Path) -> Path:
    return Path(model_path).with_suffix(".json")


def aux_path_for(model_path: str | Path) -> Path:
    """`models/student_fp16.tflite` -> `models/student_fp16.aux.npz` (scope arrays + CAM head)."""
    return Path(model_path).with_suffix(".aux.npz")


def scope_model_path_for(model_path: str | Path) -> Path:
    """`models/student_fp16.tflite` -> `models/student_fp16.scope.tflite` (the scope network)."""
    return Path(model_path).with_suffix(".scope.tflite")


def selftest_input(pattern: str, size: int) -> np.ndarray:
    """Deterministic reference input (1, size, size, 3) float32 in the model range.

    Built from closed-form formulas, not a random generator, so it is identical
    on every NumPy version and machine.
    """
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
    if pattern == "zeros":
        img = np.zeros((size, size, 3), np.float32)
    elif pattern == "gradient":
        img = np.stack([x * 2 - 1, y * 2 - 1, (x + y) - 1], axis=-1)
    elif pattern == "rings":
        r = np.sqrt((x - 0.5) ** 2 + (y - 0.5) ** 2)
        img = np.stack([np.sin(r * 40.0), np.cos(r * 25.0), np.sin(x * 17.0 + y * 11.0)], axis=-1) * 0.8
    elif pattern == "lesion":
        r = np.sqrt((x - 0.45) ** 2 + ((y - 0.55) * 1.3) ** 2)
        dark = np.clip(1.0 - r / 0.3, 0.0, 1.0)
        skin = np.array([0.55, 0.25, 0.1], np.float32)
        lesion = np.array([-0.5, -0.7, -0.75], np.float32)
        img = skin * (1 - dark[..., None]) + lesion * dark[..., None]
    else:
        raise ValueError(f"unknown self-test pattern {pattern!r}")
    return img[None].astype(np.float32)
