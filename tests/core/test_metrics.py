import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from edge_app.metrics import ASSURANCE, choose_threshold, evaluate, operating_point, resamples, robust_threshold


@pytest.fixture
def scores():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    p = np.clip(0.35 * y + 0.65 * rng.random(400), 0, 1)
    return y, p


def test_threshold_is_the_most_specific_one_that_keeps_sensitivity(scores):
    y, p = scores
    t = choose_threshold(y, p, 0.9)
    op = operating_point(y, p, t)
    assert op["sensitivity"] >= 0.9
    # any higher threshold loses the sensitivity floor or does not improve specificity
    for higher in np.unique(p[p > t])[:20]:
        o = operating_point(y, p, higher)
        assert o["sensitivity"] < 0.9 or o["specificity"] <= op["specificity"]


def test_evaluate_reports_auc_and_operating_point_with_cis(scores):
    y, p = scores
    r = evaluate(y, p, 0.5, n_boot=200)
    assert r["n"] == 400
    assert r["auc"]["value"] == pytest.approx(roc_auc_score(y, p), abs=1e-4)
    for key in ("auc", "sensitivity", "specificity", "balanced_accuracy"):
        lo, hi = r[key]["ci95"]
        assert lo <= r[key]["value"] <= hi
    c = r["confusion"]
    assert c["tp"] + c["fn"] == y.sum() and c["tn"] + c["fp"] == (1 - y).sum()


def test_lesion_grouped_bootstrap_widens_the_interval_when_images_of_a_lesion_repeat():
    # 100 lesions, each photographed 5 times with near-identical scores: 500 images but only 100 independent cases
    rng = np.random.default_rng(1)
    y_lesion = rng.integers(0, 2, 100)
    p_lesion = np.clip(0.3 * y_lesion + 0.7 * rng.random(100), 0, 1)
    y, p = np.repeat(y_lesion, 5), np.repeat(p_lesion, 5) + rng.normal(0, 1e-3, 500)
    lesions = np.repeat([f"L{i:03d}" for i in range(100)], 5)
    by_image = evaluate(y, p, 0.5, n_boot=200)
    by_lesion = evaluate(y, p, 0.5, n_boot=200, groups=lesions)
    assert by_image["bootstrap"]["unit"] == "image"
    assert by_lesion["bootstrap"] == {"resamples": 200, "unit": "group", "groups": 100}
    width = lambda r, k: r[k]["ci95"][1] - r[k]["ci95"][0]
    for key in ("auc", "sensitivity", "specificity"):
        # resampling 500 copies pretends to 5x the evidence: ~sqrt(5) = 2.2x too narrow
        assert width(by_lesion, key) > 1.6 * width(by_image, key), key
    assert by_lesion["auc"]["value"] == by_image["auc"]["value"]  # the point estimate does not change


def test_grouped_bootstrap_rejects_groups_of_the_wrong_length(scores):
    y, p = scores
    with pytest.raises(ValueError, match="groups has 3 entries for 400 cases"):
        evaluate(y, p, 0.5, n_boot=10, groups=["a", "b", "c"])


def test_the_robust_threshold_keeps_the_target_sensitivity_in_most_lesion_resamples_not_just_on_the_set(scores):
    y, p = scores
    lesions = np.arange(len(y)) // 2  # two images a lesion
    t = robust_threshold(y, p, lesions, 0.9)
    assert t <= choose_threshold(y, p, 0.9)  # never promises more than the set itself
    held = [operating_point(y[i], p[i], t)["sensitivity"] >= 0.9 for i in resamples(len(y), 200, seed=1, groups=lesions)]
    assert np.mean(held) >= ASSURANCE - 0.05
    assert all(np.all(np.bincount(lesions[i]) % 2 == 0) for i in resamples(len(y), 5, groups=lesions))  # whole lesions
