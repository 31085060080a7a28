"""Backbones in Keras 3: ImageNet EfficientNet-Lite0/1/2 from `../shared/weights/*.npz`
and the paper's three families (ResNet152V2, ConvNeXtBase, ViT-Base).

EfficientNet-Lite: no squeeze-excite, ReLU6, BatchNorm eps 1e-3, TF SAME padding,
stem 32 / head 1280 fixed. The block layout is read from the arrays themselves
(weights/README.md), so one builder serves Lite0, Lite1 and Lite2, and a
truncated trunk (first `n_blocks` blocks) serves as the student's initialisation.
Inputs are RGB in (x - 127) / 128, which is what the preprocessor outputs.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
from keras import layers

STAGE_STRIDES = (1, 2, 2, 2, 1, 2, 1)
LITE_FILES = {
    "lite0": "efficientnet_lite0_imagenet_keras_layout.npz",
    "lite1": "efficientnet_lite1_imagenet_keras_layout.npz",
    "lite2": "efficientnet_lite2_imagenet_keras_layout.npz",
}


def lite_block_specs(W) -> list[dict]:
    """(expand, kernel, stride, out) per block, read from the weight arrays."""
    specs, i, prev_out, stage = [], 0, 32, -1
    while f"_blocks.{i}._project_conv.weight" in W:
        out = int(W[f"_blocks.{i}._project_conv.weight"].shape[-1])
        if out != prev_out or i == 0:
            stage += 1
            stride = STAGE_STRIDES[stage]
        else:
            stride = 1
        specs.append({
            "expand": f"_blocks.{i}._expand_conv.weight" in W,
            "kernel": int(W[f"_blocks.{i}._depthwise_conv.weight"].shape[0]),
            "stride": stride,
            "out": out,
            "stage": stage,
        })
        prev_out, i = out, i + 1
    return specs


def _bn(W, key, name, trainable_weights: bool):
    bn = layers.BatchNormalization(epsilon=1e-3, momentum=0.99, name=name)
    return bn, ([W[key + s] for s in (".weight", ".bias", ".running_mean", ".running_var")] if trainable_weights else None)


def build_efficientnet_lite(
    weights_path: str | Path | None,
    input_shape=(128, 128, 3),
    n_blocks: int | None = None,
    head: bool = True,
    name: str = "lite",
    arch_from: str | Path | None = None,
) -> keras.Model:
    """EfficientNet-Lite trunk -> feature map.

    n_blocks: keep only the first n blocks (None = all); head: add the 1x1 conv to
    1280 + BN + ReLU6 (only with all blocks). Weights are loaded from the npz
    (`weights_path=None`: random init, layout taken from `arch_from`).
    """
    W = np.load(weights_path or arch_from)
    load = weights_path is not None
    specs = lite_block_specs(W)
    if n_blocks is not None:
        specs = specs[:n_blocks]
    assigns: list[tuple[layers.Layer, list[np.ndarray]]] = []

    def conv(x, key, filters, k=1, stride=1, lname=""):
        c = layers.Conv2D(filters, k, strides=stride, padding="same", use_bias=False, name=lname)
        y = c(x)
        if load:
            assigns.append((c, [W[key + ".weight"]]))
        return y

    def bn(x, key, lname):
        b, w = _bn(W, key, lname, load)
        y = b(x)
        if load:
            assigns.append((b, w))
        return y

    inp = keras.Input(input_shape, name="image")
    x = conv(inp, "_conv_stem", 32, 3, 2, f"{name}_stem_conv")
    x = layers.ReLU(6.0)(bn(x, "_bn0", f"{name}_stem_bn"))
    cin = 32
    for i, s in enumerate(specs):
        p = f"_blocks.{i}"
        h = x
        if s["expand"]:
            h = conv(h, p + "._expand_conv", int(W[p + "._expand_conv.weight"].shape[-1]), 1, 1, f"{name}_b{i}_expand")
            h = layers.ReLU(6.0)(bn(h, p + "._bn0", f"{name}_b{i}_expand_bn"))
        dw = layers.DepthwiseConv2D(s["kernel"], strides=s["stride"], padding="same", use_bias=False, name=f"{name}_b{i}_dw")
        h = dw(h)
        if load:
            assigns.append((dw, [W[p + "._depthwise_conv.weight"]]))
        h = layers.ReLU(6.0)(bn(h, p + "._bn1", f"{name}_b{i}_dw_bn"))
        h = conv(h, p + "._project_conv", s["out"], 1, 1, f"{name}_b{i}_project")
        h = bn(h, p + "._bn2", f"{name}_b{i}_project_bn")
        if s["stride"] == 1 and cin == s["out"]:
            h = layers.Add(name=f"{name}_b{i}_add")([x, h])
        x, cin = h, s["out"]
    if head and n_blocks is None:
        x = conv(x, "_conv_head", 1280, 1, 1, f"{name}_head_conv")
        x = layers.ReLU(6.0)(bn(x, "_bn1", f"{name}_head_bn"))
    model = keras.Model(inp, x, name=name)
    for layer, w in assigns:
        layer.set_weights(w)
    return model


def lite_feature_extractor(weights_dir: str | Path, which: str, input_size: int, freeze_stages: int | None = None) -> keras.Model:
    """ImageNet Lite trunk + global average pool -> 1280-d features.

    freeze_stages=None freezes everything (a feature extractor); n >= 0 freezes the
    stem and the first n of the seven stages (fine-tuning the rest; frozen
    BatchNorm runs in inference mode).
    """
    path = Path(weights_dir) / LITE_FILES[which]
    trunk = build_efficientnet_lite(path, (input_size, input_size, 3), name=which)
    out = layers.GlobalAveragePooling2D()(trunk.output)
    model = keras.Model(trunk.input, out, name=f"{which}_features")
    if freeze_stages is None:
        model.trainable = False
    elif freeze_stages > 0:
        specs = lite_block_specs(np.load(path))
        frozen = (f"{which}_stem",) + tuple(f"{which}_b{i}_" for i, s in enumerate(specs) if s["stage"] < freeze_stages)
        for layer in trunk.layers:
            if layer.name.startswith(frozen):
                layer.trainable = False
    return model


# ------------------------------------------------------------------ the paper's families


def paper_feature_extractor(which: str, input_size: int, weights_dir: str | Path | None = None,
                            tiny: bool = False) -> keras.Model:
    """ResNet152V2 / ConvNeXtBase / ViT-Base pooled features.

    Keras cannot download ImageNet weights here: `weights=None` (random init)
    unless `weights_dir` holds `<which>.weights.h5` (a user-supplied file).
    `tiny=True` builds a reduced member of the same family (smoke tests, CPU runs).
    """
    shape = (input_size, input_size, 3)
    # The preprocessor outputs (x - 127) / 128; the keras.applications models expect
    # their own scaling, which we apply inside the model so weights files match.
    inp = keras.Input(shape, name="image")
    pixels = layers.Rescaling(128.0, offset=127.0)(inp)  # back to [0, 255]
    if which == "resnet152v2":
        from keras.applications import resnet_v2

        ctor = resnet_v2.ResNet50V2 if tiny else resnet_v2.ResNet152V2
        x = layers.Rescaling(1.0 / 127.5, offset=-1.0)(pixels)
        base = ctor(include_top=False, weights=None, input_shape=shape, pooling="avg")
        feats = base(x)
    elif which == "convnextbase":
        from keras.applications import convnext

        ctor = convnext.ConvNeXtTiny if tiny else convnext.ConvNeXtBase
        base = ctor(include_top=False, weights=None, input_shape=shape, pooling="avg", include_preprocessing=True)
        feats = base(pixels)
    elif which == "vitbase":
        feats = _vit(layers.Rescaling(1.0 / 127.5, offset=-1.0)(pixels), input_size, tiny)
        base = None
    else:
        raise ValueError(f"unknown paper backbone {which!r}")
    model = keras.Model(inp, feats, name=f"{which}_features")
    if weights_dir is not None:
        path = Path(weights_dir) / f"{which}.weights.h5"
        if not path.is_file():
            raise FileNotFoundError(f"--weights {weights_dir}: {path.name} not found (expected one file per backbone)")
        model.load_weights(path)
    return model


def _vit(x, input_size: int, tiny: bool):
    """ViT-Base/16 (12 layers, width 768, 12 heads, MLP 3072); tiny: 2 layers, width 64."""
    patch = 16 if input_size >= 64 else 8
    depth, width, heads, mlp = (2, 64, 2, 128) if tiny else (12, 768, 12, 3072)
    n = (input_size // patch) ** 2
    x = layers.Conv2D(width, patch, strides=patch, name="vit_patch")(x)
    x = layers.Reshape((n, width))(x)
    x = _PositionEmbedding(n, width, name="vit_pos")(x)
    for i in range(depth):
        h = layers.LayerNormalization(epsilon=1e-6)(x)
        h = layers.MultiHeadAttention(heads, width // heads, name=f"vit_attn{i}")(h, h)
        x = layers.Add()([x, h])
        h = layers.LayerNormalization(epsilon=1e-6)(x)
        h = layers.Dense(mlp, activation="gelu")(h)
        h = layers.Dense(width)(h)
        x = layers.Add()([x, h])
    x = layers.LayerNormalization(epsilon=1e-6)(x)
    return layers.GlobalAveragePooling1D()(x)


class _PositionEmbedding(layers.Layer):
    def __init__(self, length: int, width: int, **kw):
        super().__init__(**kw)
        self.length, self.width = length, width

    def build(self, input_shape):
        self.pos = self.add_weight(shape=(1, self.length, self.width), initializer=keras.initializers.RandomNormal(stddev=0.02),
                                   name="pos")

    def call(self, x):
        return x + self.pos

    def get_config(self):
        return {**super().get_config(), "length": self.length, "width": self.width}
