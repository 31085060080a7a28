"""Keras student -> float16 TFLite + manifest, verified through the device runtime.

The conversion needs TensorFlow (the `train` extra); the verification runs the
exported file through `edge_app.runtime`, the same code the device runs.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

import numpy as np

from ..explain import MEANING, CamHead
from ..manifest import SELFTEST_PATTERNS, SELFTEST_TOLERANCE, Manifest, aux_path_for, selftest_input, sha256_file
from ..preprocess import Preprocessor
from ..sidecar import Sidecar
from .scope_fit import ScopeSet, fit_scope_check

LABELS = ["benign", "malignant"]


def convert_fp16(keras_model: Any) -> bytes:
    """Float16 post-training quantisation (Optimize.DEFAULT + supported_types=[float16])."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]
    return converter.convert()


def keras_outputs(keras_model: Any, batch: np.ndarray, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray | None]:
    """(probabilities (N, 2), feature maps (N, h, w, C) or None) of a one- or two-output model, told apart by rank."""
    out = keras_model.predict(np.asarray(batch, np.float32), batch_size=batch_size, verbose=0)
    outs = [np.asarray(o, np.float32) for o in (out if isinstance(out, (list, tuple)) else [out])]
    probs = next(o for o in outs if o.ndim == 2)
    features = next((o for o in outs if o.ndim == 4), None)
    return probs, features


def keras_predict(keras_model: Any, batch: np.ndarray) -> np.ndarray:
    """Probabilities only (N, 2)."""
    return keras_outputs(keras_model, batch)[0]


def cam_head(keras_model: Any) -> CamHead:
    """w = W[:, 1] - W[:, 0] and b = b1 - b0 of the "logits" layer, divided by the model's temperature."""
    kernel, bias = (np.asarray(v, np.float32) for v in keras_model.get_layer("logits").get_weights())
    temperature = model_temperature(keras_model)
    return CamHead((kernel[:, 1] - kernel[:, 0]) / temperature, float(bias[1] - bias[0]) / temperature)


def model_temperature(keras_model: Any) -> float:
    """The temperature `with_softmax` put in (1.0 when there is no "temperature" layer)."""
    try:
        layer = keras_model.get_layer("temperature")
    except ValueError:
        return 1.0
    return 1.0 / float(layer.scale)


def fit_scope(keras_model: Any, scope_set: ScopeSet) -> tuple[Sidecar, dict[str, Any]]:
    """Scope check (`scope_fit.fit_scope_check`) on the set's descriptors, plus the CAM head."""
    check, block = fit_scope_check(scope_set)
    return Sidecar(check, cam_head(keras_model)), block


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
    *,
    scope_data: ScopeSet | None = None,
) -> Manifest:
    """Write `<out>.tflite` and `<out>.json` (and `<out>.aux.npz`); return the manifest.

    The golden self-test outputs are the Keras model's outputs on the reference
    patterns; the exported file must reproduce them through the device runtime
    within SELFTEST_TOLERANCE before the manifest is written (a failing export
    never produces a loadable model).

    `scope_data` = the descriptors the scope check is fitted on
    (`scope_fit.build_set` with this model's features): with it, and a model
    from `with_softmax` (probabilities + features), the sidecar holds the scope
    check (<= 3% of validation flagged) and the CAM head, and the manifest
    names it with its sha256 plus `scope` and `explain` blocks.
    """
    import tensorflow as tf

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tflite_bytes = convert_fp16(keras_model)
    out_path.write_bytes(tflite_bytes)
    size = preprocessor.params.size
    aux_path = aux_path_for(out_path)
    aux: dict[str, Any] = {}
    scope_block: dict[str, Any] = {}
    explain_block: dict[str, Any] = {}
    sidecar = None
    if scope_data is not None:
        sidecar, scope_block = fit_scope(keras_model, scope_data)
        aux_path.write_bytes(sidecar.to_bytes())
        aux = {"file": aux_path.name, "sha256": sha256_file(aux_path), "size_bytes": aux_path.stat().st_size}
    else:
        aux_path.unlink(missing_ok=True)  # a stale sidecar of an earlier export must not linger
    cases = []
    for p in SELFTEST_PATTERNS:
        probs, features = keras_outputs(keras_model, selftest_input(p, size))
        case = {"pattern": p, "output": probs[0].round(6).tolist()}
        if sidecar is not None and features is not None:
            case["scope_score"] = round(float(sidecar.scope.score(features)[0]), 5)
        cases.append(case)
    if sidecar is not None:
        _, f = keras_outputs(keras_model, selftest_input("lesion", size))
        explain_block = {"method": "cam", "feature_shape": list(f.shape[1:]), "temperature": model_temperature(keras_model),
                         "weights": "W[:, malignant] - W[:, benign] of the 'logits' layer, divided by the temperature",
                         "meaning": MEANING}
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
        aux=aux,
        scope=scope_block,
        explain=explain_block,
    )
    manifest.save(out_path.with_suffix(".json"))
    # Verify through the device path: raises ModelError if the self-test fails.
    from ..runtime import Classifier

    Classifier(out_path)
    return manifest


def _keras_version() -> str:
    import keras

    return keras.__version__
