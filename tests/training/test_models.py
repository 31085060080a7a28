"""Model code: the student fits the device budget, the paper preset's backbones build, the KD loss is right."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")


def test_student_initialised_from_imagenet_lite0_fits_the_500_kb_budget(lite_weights):
    from edge_app.training.config import get_preset
    from edge_app.training.student import build_student

    cfg = get_preset("cpu")
    model = build_student(cfg.size, cfg.student_blocks, cfg.student_head, weights_dir=lite_weights,
                          freeze_blocks=cfg.student_freeze)
    assert model.count_params() * 2 < 500 * 1024 * 0.95  # float16 weights + flatbuffer overhead
    assert model.output.shape[-1] == 2


@pytest.mark.slow
@pytest.mark.parametrize("which", ["resnet152v2", "convnextbase", "vitbase"])
def test_paper_preset_backbones_build_and_give_pooled_features(which):
    from edge_app.training.backbones import paper_feature_extractor

    model = paper_feature_extractor(which, 32, tiny=True)
    out = model.predict(np.zeros((2, 32, 32, 3), np.float32), verbose=0)
    assert out.shape[0] == 2 and out.ndim == 2


def test_distillation_loss_is_cross_entropy_when_alpha_is_one_and_zero_kl_for_matching_logits():
    from edge_app.training.distill import DistillLoss, pack_targets

    logits = np.array([[0.2, 1.5], [2.0, -1.0]], np.float32)
    y = pack_targets(np.array([1, 0]), logits)
    ce = DistillLoss(alpha=1.0)(y, logits)
    kd_only = DistillLoss(alpha=0.0, temperature=3.0)(y, logits)
    expected_ce = np.mean(-np.log(np.exp(logits[[0, 1], [1, 0]]) / np.exp(logits).sum(1)))
    assert float(ce) == pytest.approx(expected_ce, rel=1e-5)
    assert float(kd_only) == pytest.approx(0.0, abs=1e-6)


def test_flip_averaging_in_the_exported_graph_gives_a_mirrored_image_the_same_probability(lite_weights):
    from edge_app.training.student import build_student, with_softmax

    model = build_student(32, n_blocks=2, head_channels=8, dx_classes=7, arch_dir=lite_weights)
    x = np.random.default_rng(0).uniform(-1, 1, (3, 32, 32, 3)).astype(np.float32)
    plain, tta = with_softmax(model), with_softmax(model, flip_tta=True)
    p, p_mirror = (np.asarray(tta.predict(v, verbose=0)[0]) for v in (x, x[:, :, ::-1]))
    assert np.allclose(p, p_mirror, atol=1e-5)
    logits = np.asarray(model.predict(x, verbose=0))[:, :2] / 2 + np.asarray(model.predict(x[:, :, ::-1], verbose=0))[:, :2] / 2
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert np.allclose(p, expected, atol=1e-5)
    assert not np.allclose(np.asarray(plain.predict(x, verbose=0)[0]), np.asarray(plain.predict(x[:, :, ::-1], verbose=0)[0]))
    # the features (scope check, heatmap) stay those of the image itself
    assert np.allclose(np.asarray(tta.predict(x, verbose=0)[1]), np.asarray(plain.predict(x, verbose=0)[1]), atol=1e-6)
