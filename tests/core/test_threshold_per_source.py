import numpy as np
import pytest

from edge_app.metrics import choose_threshold, choose_threshold_per_group, expected_calibration_error, fit_platt, operating_point


def _source(rng, n_pos, n_neg, shift):
    """Scores of one source: malignant higher than benign, the whole distribution slid by `shift`."""
    p = np.concatenate([rng.beta(5, 2, n_pos), rng.beta(2, 5, n_neg)]) * 0.8 + shift
    return np.r_[np.ones(n_pos), np.zeros(n_neg)].astype(int), np.clip(p, 0, 1)


def test_threshold_keeps_sensitivity_on_each_source_not_only_on_the_pool():
    rng = np.random.default_rng(0)
    y_a, p_a = _source(rng, 200, 800, 0.15)  # a large source with high scores
    y_b, p_b = _source(rng, 30, 60, -0.1)  # a small source whose scores sit lower (another dermatoscope)
    y, p = np.r_[y_a, y_b], np.r_[p_a, p_b]
    groups = np.array(["a"] * len(y_a) + ["b"] * len(y_b))
    pooled = choose_threshold(y, p, 0.9)
    assert operating_point(y_b, p_b, pooled)["sensitivity"] < 0.9  # the pooled rule misses the small source
    thr, own = choose_threshold_per_group(y, p, groups, 0.9)
    assert set(own) == {"a", "b"} and thr == min(own.values())
    for g in ("a", "b"):
        m = groups == g
        assert operating_point(y[m], p[m], thr)["sensitivity"] >= 0.9


def test_threshold_per_source_needs_a_malignant_case_somewhere():
    with pytest.raises(ValueError, match="malignant"):
        choose_threshold_per_group(np.zeros(5, int), np.linspace(0, 1, 5), ["a"] * 5)


def test_platt_scaling_fixes_overconfident_scores():
    rng = np.random.default_rng(1)
    d = rng.normal(0, 3, 4000)  # logit differences 3x too confident
    y = (rng.random(4000) < 1 / (1 + np.exp(-d / 3))).astype(int)
    a, b = fit_platt(y, d)
    assert 0.25 < a < 0.45
    raw, fixed = 1 / (1 + np.exp(-d)), 1 / (1 + np.exp(-(a * d + b)))
    assert expected_calibration_error(y, fixed) < 0.03 < expected_calibration_error(y, raw)
