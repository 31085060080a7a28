"""The scope network's `.tflite`: ImageNet EfficientNet-Lite0 on the decoded frame -> image statistics.

Needs TensorFlow (the `train` extra). The trunk is frozen ImageNet (`../shared/weights`,
`backbones.build_efficientnet_lite`), cut after block 14; its features are the spatial mean
and standard deviation of the outputs of blocks `BLOCKS` (low-, mid- and high-level: edges
and texture, surfaces, parts), concatenated. The head that reads them is fitted without
TensorFlow (`scope_net_fit.py`) and lives in the sidecar, so `edge-train scope` can refit it
on the device runtime's own features. Converted with full integer quantisation (int8 weights
and activations, calibrated on real frames of both kinds).

Why these features (patient-grouped CV on the staged phone photos, threshold <= 0.8% of each
source's validation dermoscopy, model card): the 1280 pooled features of the whole trunk
reached 70% at 128 px and 68% at 160 px, adding their spatial spread 65%; the mean + std of
blocks 4, 10 and 14 at 160 px 96%. What tells a photo from dermoscopy is in the mid-level
statistics (skin surface, lighting, background), not in the ImageNet classes.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from .backbones import LITE_FILES

NETWORK = "lite0"
INPUT_SIZE = 160
BLOCKS = (4, 10, 14)  # EfficientNet-Lite0 blocks whose outputs are summarised (mean and std over space)


def build_scope_net(weights_dir: str | Path, input_size: int = INPUT_SIZE, blocks: tuple[int, ...] = BLOCKS) -> Any:
    """Keras: image (S, S, 3) in (x - 127) / 128 -> [mean, std] of each block's output (frozen ImageNet Lite0)."""
    import keras
    from keras import layers, ops

    from .backbones import build_efficientnet_lite

    path = Path(weights_dir) / LITE_FILES[NETWORK]
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: --weights must hold the ImageNet EfficientNet-Lite weights")
    trunk = build_efficientnet_lite(path, (input_size, input_size, 3), n_blocks=max(blocks) + 1, head=False, name=NETWORK)
    stats = []
    for b in blocks:
        x = trunk.get_layer(f"{NETWORK}_b{b}_add").output
        mean = ops.mean(x, axis=(1, 2))
        stats += [mean, ops.sqrt(ops.relu(ops.mean(x * x, axis=(1, 2)) - mean * mean) + 1e-6)]
    model = keras.Model(trunk.input, layers.Concatenate(name="features")(stats), name="scope_net")
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
        "network": f"EfficientNet-Lite0, ImageNet-1k weights (frozen), cut after block {max(BLOCKS)}",
        "features_are": f"spatial mean and std of the outputs of blocks {', '.join(map(str, BLOCKS))}",
        "weights": LITE_FILES[NETWORK],
        "input_size": input_size,
        "input": "the decoded frame as the device path scaled it, squashed to a square, RGB, (x - 127) / 128",
        "features": int(model.output.shape[-1]),
        "quantization": f"int8 weights and activations (calibrated on {len(calibration)} frames), float input/output",
        "tensorflow": tf.__version__,
    }
