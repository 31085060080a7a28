"""Splits and augmentation: what a reader of the model card relies on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_app.training.augment import AugmentParams, Batches
from edge_app.training.data import class_weights, load_table, split_table

HAM = Path(__file__).resolve().parents[3] / "shared" / "data" / "ham10000"


def test_split_never_puts_one_lesion_on_two_sides(tmp_path, make_dataset):
    table = load_table(make_dataset(tmp_path, n_lesions=40, images_per_lesion=3) / "labels.csv")
    parts = split_table(table, seed=3)
    sides = [set(p.groups) for p in parts.values()]
    assert not (sides[0] & sides[1]) and not (sides[0] & sides[2]) and not (sides[1] & sides[2])
    assert sum(len(p) for p in parts.values()) == len(table)


def test_split_is_reproducible_with_the_same_seed(tmp_path, make_dataset):
    table = load_table(make_dataset(tmp_path) / "labels.csv")
    a, b = split_table(table, seed=1), split_table(table, seed=1)
    assert all([r["file"] for r in a[s].rows] == [r["file"] for r in b[s].rows] for s in a)


@pytest.mark.skipif(not (HAM / "labels.csv").is_file(), reason=f"HAM10000 not staged at {HAM}")
def test_ham10000_split_is_lesion_grouped_and_stratified():
    parts = split_table(load_table(HAM / "labels.csv"))
    sides = [set(p.groups) for p in parts.values()]
    assert not (sides[0] & sides[1] | sides[0] & sides[2] | sides[1] & sides[2])
    rates = [p.y.mean() for p in parts.values()]
    assert max(rates) - min(rates) < 0.03


def test_class_weights_balance_the_classes():
    y = np.array([0] * 80 + [1] * 20)
    w = class_weights(y)
    assert w[0] * 80 == pytest.approx(w[1] * 20)


def test_augmentation_changes_training_batches_only():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (8, 32, 32, 3)).astype(np.float32)
    y = np.eye(2, dtype=np.float32)[[0, 1] * 4]
    train = Batches(x, y, batch_size=8, augment=True, params=AugmentParams())
    val = Batches(x, y, batch_size=8, augment=False)
    xt, _ = train[0]
    xv, _ = val[0]
    assert np.array_equal(xv, x), "validation batches must be the cached tensors, untouched"
    assert not np.allclose(xt, x)
    assert xt.shape == x.shape and np.abs(xt).max() <= 1.0


def test_augmentation_is_deterministic_for_a_seed():
    x = np.random.default_rng(1).uniform(-1, 1, (4, 32, 32, 3)).astype(np.float32)
    y = np.eye(2, dtype=np.float32)[[0, 1, 0, 1]]
    a = Batches(x, y, batch_size=4, augment=True, seed=5)[0][0]
    b = Batches(x, y, batch_size=4, augment=True, seed=5)[0][0]
    assert np.array_equal(a, b)
