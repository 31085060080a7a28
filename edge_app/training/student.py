"""The student: a truncated ImageNet EfficientNet-Lite0 trunk (stem + first blocks,
depthwise-separable inverted residuals) + 1x1 conv + global pool + dense(2).

The training model outputs logits (distillation needs them); the exported model
adds a softmax so the device gets probabilities ["benign", "malignant"], and
hands out the last feature map beside them (scope check and class activation map).
"""

from __future__ import annotations

from pathlib import Path

import keras
from keras import layers, ops

from .backbones import LITE_FILES, build_efficientnet_lite


def build_student(size: int, n_blocks: int = 7, head_channels: int = 256, dropout: float = 0.2,
                  weights_dir: str | Path | None = None, arch_dir: str | Path | None = None,
                  freeze_blocks: int = 0, dx_classes: int = 0) -> keras.Model:
    """Logit model. weights_dir=None: random init (layout from arch_dir's Lite0 file).

    The binary logits layer is "logits" and the pooling layer "student_gap" (the exported
    model reads both: probabilities, and the feature map for the scope check and the heatmap).
    dx_classes > 0 adds an auxiliary diagnosis head "dx_logits" on the same pooled features;
    the training model then outputs [logits | dx_logits] concatenated (one tensor, one loss).

    freeze_blocks > 0 freezes the stem and the first blocks (the full-resolution
    layers, most of the training cost on a CPU); their BatchNorm runs in inference mode.
    """
    lite0 = LITE_FILES["lite0"]
    trunk = build_efficientnet_lite(
        Path(weights_dir) / lite0 if weights_dir else None, (size, size, 3), n_blocks=n_blocks, head=False,
        name="student", arch_from=Path(arch_dir or weights_dir) / lite0,
    )
    if freeze_blocks > 0:
        frozen = ("student_stem",) + tuple(f"student_b{i}_" for i in range(freeze_blocks))
        for layer in trunk.layers:
            if layer.name.startswith(frozen):
                layer.trainable = False
    x = layers.Conv2D(head_channels, 1, use_bias=False, name="student_head_conv")(trunk.output)
    x = layers.BatchNormalization(epsilon=1e-3, name="student_head_bn")(x)
    x = layers.ReLU(6.0)(x)
    x = layers.GlobalAveragePooling2D(name="student_gap")(x)
    x = layers.Dropout(dropout)(x)
    logits = layers.Dense(2, name="logits")(x)
    if dx_classes > 0:
        dx = layers.Dense(dx_classes, name="dx_logits")(x)
        return keras.Model(trunk.input, layers.Concatenate(name="train_outputs")([logits, dx]), name="student")
    return keras.Model(trunk.input, logits, name="student")


def with_softmax(logit_model: keras.Model, temperature: float = 1.0, flip_tta: bool = False) -> keras.Model:
    """The deployable model: [probabilities, features].

    probabilities (N, 2) = softmax(logits / temperature), named "probabilities";
    features (N, h, w, C) = the last feature map (the input of the "student_gap"
    pooling layer), named "features": the device computes the scope score and the
    class activation map from it. The "logits" layer is taken by name, so a model
    with a second (auxiliary) output exports the same way. `flip_tta` averages the
    logits of the image and of its mirror image inside the graph (test-time
    augmentation at twice the inference cost; the features stay the image's own).
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    logits = logit_model.get_layer("logits").output
    if flip_tta:
        logit_head = keras.Model(logit_model.input, logits, name="student_logits")
        mirrored = layers.Lambda(lambda x: ops.flip(x, axis=2), name="mirror")(logit_model.input)
        logits = layers.Average(name="flip_average")([logits, logit_head(mirrored)])
    if temperature != 1.0:
        logits = layers.Rescaling(1.0 / float(temperature), name="temperature")(logits)
    probs = layers.Softmax(name="probabilities")(logits)
    features = layers.Identity(name="features")(logit_model.get_layer("student_gap").input)
    return keras.Model(logit_model.input, [probs, features], name="student_probs")
