"""Keras student -> float16 TFLite + manifest, verified through the device runtime.

The conversion needs TensorFlow (the `train` extra); the verification runs the
exported file through `edge_app.runtime`, the same code the device runs.
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..manifest import SELFTEST_PATTERNS, SELFTEST_TOLERANCE, Manifest, selftest_input, sha256_file
from ..preprocess import Preprocessor

LABELS = ["benign", "malignant"]


def convert_fp16(keras_model: Any) -> bytes:
    """Float16 post-training quantisation (Optimize.DEFAULT + supported_types=[float16])."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]
    return converter.convert()


def keras_predict(keras_model: Any, batch: np.ndarray) -> np.ndarray:
    return np.asarray(keras_model.predict(np.asarray(batch, np.float32), verbose=0), dtype=np.float32)


def export_student(
    keras_model: Any,
    out_path: str | Path,
    preprocessor: Preprocessor,
    threshold: float,
    threshold_rule: str,
    version: str,
    provenance: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    training_command: str = "",
) -> Manifest:
    """Write `<out>.tflite` and `<out>.json`; return the manifest.

    The golden self-test outputs are the Keras model's outputs on the reference
    patterns; the exported file must reproduce them through the device runtime
    within SELFTEST_TOLERANCE before the manifest is written (a failing export
    never produces a loadable model).
    """
    import tensorflow as tf

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tflite_bytes = convert_fp16(keras_model)
    out_path.write_bytes(tflite_bytes)
    size = preprocessor.params.size
    cases = [{"pattern": p, "output": keras_predict(keras_model, selftest_input(p, size))[0].round(6).tolist()} for p in SELFTEST_PATTERNS]
    manifest = Manifest(
        name=out_path.stem,
        version=version,
        labels=list(LABELS),
        positive_label="malignant",
        input={"shape": [1, size, size, 3], "dtype": "float32", "range": [-1.0, 1.0], "channel_order": "RGB"},
        preprocessing=preprocessor.describe(),
        threshold=float(threshold),
        threshold_rule=threshold_rule,
        sha256=sha256_file(out_path),
        selftest={"tolerance": SELFTEST_TOLERANCE, "cases": cases},
        converter={"tensorflow": tf.__version__, "keras": _keras_version(), "quantization": "float16",
                   "size_bytes": len(tflite_bytes)},
        provenance=provenance or {},
        metrics=metrics or {},
        training_command=training_command,
        created_at=_dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat(),
    )
    manifest.save(out_path.with_suffix(".json"))
    # Verify through the device path: raises ModelError if the self-test fails.
    from ..runtime import Classifier

    Classifier(out_path)
    return manifest


def _keras_version() -> str:
    import keras

    return keras.__version__


def update_manifest_metrics(manifest_path: str | Path, metrics: dict[str, Any]) -> None:
    """Merge metrics into an existing manifest (the sha256 of the model is untouched)."""
    path = Path(manifest_path)
    data = json.loads(path.read_text())
    data.setdefault("metrics", {}).update(metrics)
    path.write_text(json.dumps(data, indent=2) + "\n")
