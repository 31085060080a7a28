"""Export with the scope check and heatmap head: with_softmax's two outputs, the sidecar, the manifest blocks,
and the device runtime reading them back (a student with an auxiliary dx head exports the same way)."""

from __future__ import annotations

import json

import numpy as np
import pytest

keras = pytest.importorskip("keras")


def _student(with_dx_head: bool):
    """The contract of build_student at 32 px: ReLU6 feature map -> "student_gap" -> "logits" (+ "dx_logits")."""
    from keras import layers

    keras.utils.set_random_seed(1)
    inp = keras.Input((32, 32, 3))
    x = layers.ReLU(6.0)(layers.Conv2D(8, 3, strides=2, padding="same")(inp))
    x = layers.ReLU(6.0)(layers.Conv2D(16, 3, strides=2, padding="same")(x))
    pooled = layers.GlobalAveragePooling2D(name="student_gap")(x)
    logits = layers.Dense(2, name="logits")(pooled)
    outputs = [logits, layers.Dense(7, name="dx_logits")(pooled)] if with_dx_head else logits
    return keras.Model(inp, outputs)


def test_build_student_names_its_pooling_layer_for_the_export(lite_weights):
    from edge_app.training.student import build_student, with_softmax

    model = with_softmax(build_student(64, n_blocks=2, head_channels=16, arch_dir=lite_weights))
    probs, features = model.outputs
    assert probs.shape[-1] == 2 and len(features.shape) == 4 and features.shape[-1] == 16


def test_with_softmax_gives_tempered_probabilities_and_the_feature_map_even_with_a_dx_head():
    from edge_app.training.student import with_softmax

    student = _student(with_dx_head=True)
    model = with_softmax(student, temperature=2.0)
    assert model.output_names == ["probabilities", "features"]
    x = np.random.default_rng(0).uniform(-1, 1, (3, 32, 32, 3)).astype(np.float32)
    probs, features = model.predict(x, verbose=0)
    logits = student.predict(x, verbose=0)[0]
    expected = np.exp(logits / 2.0) / np.exp(logits / 2.0).sum(axis=1, keepdims=True)
    assert np.allclose(probs, expected, atol=1e-5)
    assert features.shape == (3, 8, 8, 16)
    with pytest.raises(ValueError, match="temperature"):
        with_softmax(student, temperature=0.0)


def test_export_with_scope_data_writes_a_verified_sidecar_the_device_uses(tmp_path):
    from edge_app.preprocess import Preprocessor, PreprocessParams
    from edge_app.runtime import Classifier
    from edge_app.training.export import export_student, keras_outputs
    from edge_app.training.scope_fit import build_set, device_tensors
    from edge_app.training.student import with_softmax
    from tests.conftest import make_lesion_image

    model = with_softmax(_student(with_dx_head=True), temperature=1.5)
    pre = Preprocessor(PreprocessParams(size=32))
    train = [make_lesion_image(96, 72, seed=s, vignette=s % 2 == 0) for s in range(120)]
    val_frames = [make_lesion_image(96, 72, seed=s, vignette=s % 2 == 0) for s in range(500, 600)]
    scope_set = build_set(train, ["a"] * 60 + ["b"] * 60, val_frames, ["a"] * 100, pre, 64,
                          lambda batch: keras_outputs(model, batch)[1])
    out = tmp_path / "student_fp16.tflite"
    manifest = export_student(model, out, pre, 0.4, "test", "t-1", scope_data=scope_set)
    aux = tmp_path / "student_fp16.aux.npz"
    assert manifest.aux["file"] == aux.name and len(manifest.aux["sha256"]) == 64
    assert manifest.scope["val_flagged"] <= 0.03 and manifest.scope["n_val"] == 100 and manifest.scope["n_train"] == 120
    assert manifest.scope["n_augmented"] == 120 and manifest.scope["negatives"]["lesion_on_skin"] == 120
    assert set(manifest.scope["leave_one_kind_out_flagged"]) == set(manifest.scope["negatives"])
    assert manifest.explain["method"] == "cam" and manifest.explain["temperature"] == pytest.approx(1.5)
    assert all("scope_score" in case for case in manifest.selftest["cases"])
    on_disk = json.loads(out.with_suffix(".json").read_text())
    assert on_disk["scope"]["threshold"] == pytest.approx(manifest.scope["threshold"])
    val = np.stack(list(device_tensors(val_frames[:4], pre, 64)))
    rng = np.random.default_rng(0)

    clf = Classifier(out, num_threads=1)
    assert clf.has_scope
    probs16, feats16 = clf.predict_outputs(val[:4])
    probs32, feats32 = keras_outputs(model, val[:4])
    assert np.max(np.abs(probs16 - probs32)) < 0.01
    assert np.max(np.abs(feats16 - feats32)) < 0.05 * max(1.0, float(np.abs(feats32).max()))  # fp16 features
    noise = rng.uniform(-1, 1, (4, 32, 32, 3)).astype(np.float32)
    _, feats_noise = clf.predict_outputs(noise)
    assert np.all(clf.sidecar.scope.score(feats_noise) > clf.sidecar.scope.threshold)  # far from the training tensors
    cam = clf.sidecar.cam.cam(feats16[0])
    assert cam.mean() == pytest.approx(np.log(probs16[0, 1] / probs16[0, 0]), abs=0.02)


def test_export_without_scope_data_removes_a_stale_sidecar_and_the_model_loads_without_scope(tmp_path):
    from edge_app.preprocess import Preprocessor, PreprocessParams
    from edge_app.runtime import Classifier
    from edge_app.training.export import export_student
    from edge_app.training.student import with_softmax

    out = tmp_path / "m.tflite"
    (tmp_path / "m.aux.npz").write_bytes(b"stale")
    manifest = export_student(with_softmax(_student(False)), out, Preprocessor(PreprocessParams(size=32)), 0.5, "test", "t-2")
    assert manifest.aux == {} and not (tmp_path / "m.aux.npz").exists()
    clf = Classifier(out, num_threads=1)
    assert not clf.has_scope and clf.classify(np.full((64, 64, 3), 128, np.uint8)).in_scope is None
