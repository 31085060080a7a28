import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from edge_app.metrics import choose_threshold, evaluate, operating_point


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
