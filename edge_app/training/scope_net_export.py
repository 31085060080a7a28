"""The scope network's `.tflite`: ImageNet EfficientNet-Lite0 on the decoded frame -> pooled features.

Needs TensorFlow (the `train` extra). The trunk is frozen ImageNet (`../shared/weights`,
`backbones.build_efficientnet_lite`), global-average pooled to 1280 features; the head that
reads them is fitted without TensorFlow (`scope_net_fit.py`) and lives in the sidecar, so
`edge-train scope` can refit it on the device runtime's own features. Converted with full
integer quantisation (int8 weights and activations, calibrated on real frames of both
kinds): 4 MB and about 2 ms on two cores with XNNPACK, where float16 would be 6.8 MB and
int8 weights with float activations (dynamic range) 25 ms.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from .backbones import LITE_FILES

NETWORK = "lite0"
INPUT_SIZE = 128


def build_scope_net(weights_dir: str | Path, input_size: int = INPUT_SIZE) -> Any:
    """Keras: image (S, S, 3) in (x - 127) / 128 -> 1280 pooled features (frozen ImageNet Lite0)."""
    import keras
    from keras import layers

    from .backbones import build_efficientnet_lite

    path = Path(weights_dir) / LITE_FILES[NETWORK]
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: --weights must hold the ImageNet EfficientNet-Lite weights")
    trunk = build_efficientnet_lite(path, (input_size, input_size, 3), name=NETWORK)
    model = keras.Model(trunk.input, layers.GlobalAveragePooling2D(name="features")(trunk.output), name="scope_net")
    model.trainable = False
    return model


def convert_int8(model: Any, calibration: np.ndarray) -> bytes:
    """Full integer quantisation, float input and output; `calibration` = model inputs (N, S, S, 3)."""
    import tensorflow as tf

    def representative() -> Iterable[list[np.ndarray]]:
        for x in calibration:
            yield [x[None].astype(np.float32)]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    return converter.convert()


def export_scope_net(out_path: Path, weights_dir: str | Path, calibration: np.ndarray,
                     input_size: int = INPUT_SIZE) -> dict[str, Any]:
    """Write the `.tflite`; returns what the manifest's `scope_model` says of it (less its sha256 and size)."""
    import tensorflow as tf

    model = build_scope_net(weights_dir, input_size)
    out_path.write_bytes(convert_int8(model, calibration))
    return {
        "file": out_path.name,
        "network": "EfficientNet-Lite0, ImageNet-1k weights (frozen), global average pool",
        "weights": LITE_FILES[NETWORK],
        "input_size": input_size,
        "input": "the decoded frame as the device path scaled it, squashed to a square, RGB, (x - 127) / 128",
        "features": int(model.output.shape[-1]),
        "quantization": f"int8 weights and activations (calibrated on {len(calibration)} frames), float input/output",
        "tensorflow": tf.__version__,
    }
