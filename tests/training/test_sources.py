"""Several dermoscopy sources: per-source loss weights, choosing sources, the shortcut table, the resident training input."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_app.training.config import get_preset
from edge_app.training.data import Table, load_sources, source_weights, to_uint8, weight_summary
from edge_app.training.shortcuts import jpeg_quality, shortcut_report
from edge_app.training.tensor_input import ResidentPasses

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def _table(counts: dict[str, tuple[int, int]]) -> Table:
    rows = [{"file": f"{name}/{i}.jpg", "label": label, "dataset": name, "lesion_id": f"{name}:{i}", "dx_type": ""}
            for name, (benign, malignant) in counts.items()
            for i, label in enumerate(["benign"] * benign + ["malignant"] * malignant)]
    return Table(rows, ["file", "label", "dataset", "lesion_id", "dx_type"])


def test_a_source_of_a_few_melanomas_gets_a_small_share_and_no_image_weighs_more_than_the_cap():
    table = _table({"ham10000": (800, 200), "isic2020": (1000, 14)})
    w = source_weights(table, {"isic2020": 0.1}, follow_up_share=0.3, max_weight=4.0)
    assert w.mean() == pytest.approx(1.0, abs=1e-5) and w.max() <= 4.0 + 1e-4
    share = weight_summary(table, w)["isic2020"]
    assert share["benign_share"] + share["malignant_share"] < 0.11
    # without the cap each of its 14 melanomas would weigh as much as 7 images
    assert source_weights(table, {"isic2020": 0.1}, 0.3).max() > 7


def test_excluding_a_source_is_checked_before_any_work():
    cfg = get_preset("v4").override(["exclude_datasets=isic2020"])
    assert cfg.sources == ("ham10000", "isic_archive", "isic2017")
    with pytest.raises(SystemExit, match="not among datasets"):
        _ = get_preset("cpu").override(["exclude_datasets=isic2017"]).sources
    with pytest.raises(SystemExit, match="shares add up to more than 1"):
        get_preset("v4").override(["dataset_share=isic2017:0.7,isic2020:0.5"]).share_of_sources()


def test_a_source_that_is_not_staged_is_named_with_what_is_there(tmp_path, make_dataset):
    make_dataset(tmp_path / "ham10000", n_lesions=4)
    with pytest.raises(SystemExit, match=r"\['isic2017'\] not staged .*staged there: \['ham10000'\]"):
        load_sources(tmp_path, ("ham10000", "isic2017"))


@pytest.mark.parametrize("quality", [40, 75, 92])
def test_jpeg_quality_is_read_from_the_quantisation_table(tmp_path, quality):
    path = tmp_path / "x.jpg"
    cv2.imwrite(str(path), np.random.default_rng(0).integers(0, 255, (64, 80, 3), dtype=np.uint8),
                [cv2.IMWRITE_JPEG_QUALITY, quality])
    from PIL import Image

    with Image.open(path) as im:
        assert abs(jpeg_quality(list(im.quantization[0])) - quality) <= 1


def test_shortcut_table_flags_a_source_of_squashed_squares_whose_geometry_gives_the_label_away(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for name, shape, q, malignant_share in (("clinic", (150, 200), 75, 0.5), ("squares", (256, 256), 92, 0.05)):
        (tmp_path / name / "images").mkdir(parents=True)
        with open(tmp_path / name / "labels.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["file", "label", "lesion_id"])
            for i in range(40):
                malignant = i < 40 * malignant_share
                cv2.imwrite(str(tmp_path / name / f"images/{i}.jpg"), rng.integers(0, 255, (*shape, 3), dtype=np.uint8),
                            [cv2.IMWRITE_JPEG_QUALITY, q])
                w.writerow([f"images/{i}.jpg", "malignant" if malignant else "benign", f"L{i}"])
        rows.append(name)
    report = shortcut_report(load_sources(tmp_path, tuple(rows)), tmp_path, sample=5)
    squares = report["sources"]["squares"]
    assert squares["square_share"] == 1.0 and squares["jpeg_quality_median"] == 92 and squares["malignant_share"] == 0.05
    assert report["sources"]["clinic"]["aspect_median"] == pytest.approx(200 / 150, abs=1e-3)
    assert report["shortcut_auc_all"] > 0.7  # the squares' look alone says "benign"


def test_resident_passes_give_every_image_once_per_epoch_in_the_model_range():
    rng = np.random.default_rng(0)
    x = rng.uniform(-0.99, 0.99, (2, 10, 8, 8, 3)).astype(np.float32)
    passes = to_uint8(x)
    assert np.abs((passes.astype(np.float32) - 127) / 128 - x).max() <= 0.5 / 128 + 1e-6
    targets = np.eye(10, dtype=np.float32)  # row i identifies image i
    data = ResidentPasses(passes, targets, None, batch_size=4, seed=1)
    for epoch in (0, 1):
        seen, sums = [], []
        for xb, yb, wb in data.epoch(epoch):
            xb, yb = np.asarray(xb), np.asarray(yb)
            seen += list(yb.argmax(axis=1))
            sums += list(np.sort(xb.reshape(len(xb), -1), axis=1))  # a flip or turn moves pixels, never changes them
            assert np.asarray(wb).tolist() == [1.0] * len(xb)
        assert sorted(seen) == list(range(10))
        expected = (passes[epoch % 2].astype(np.float32) - 127) / 128
        for i, s in zip(seen, sums, strict=True):
            assert np.allclose(s, np.sort(expected[i].ravel()))


@pytest.mark.skipif(not (SHARED_DATA / "isic2020" / "labels.csv").is_file(), reason=f"isic2020 not staged at {SHARED_DATA}")
def test_isic2020_splits_by_patient_and_keeps_melanomas_on_every_side():
    from edge_app.training.data import split_sources

    parts = split_sources(load_sources(SHARED_DATA, ("isic2020",)))
    sides = [set(p.groups) for p in parts.values()]
    assert not (sides[0] & sides[1] | sides[0] & sides[2] | sides[1] & sides[2])
    assert all(p.y.sum() >= 3 for p in parts.values())


def test_mixed_precision_holds_only_while_the_student_is_built_and_trained():
    import keras

    from edge_app.training.tensor_input import dtype_policy, resolve_precision

    assert resolve_precision("auto") == "float32"  # no GPU here; a lent GPU gets mixed_bfloat16
    with dtype_policy("mixed_bfloat16") as chosen:
        layer = keras.layers.Dense(2)
        assert chosen == "mixed_bfloat16" and layer.compute_dtype == "bfloat16" and layer.variable_dtype == "float32"
    assert keras.config.dtype_policy().name == "float32"  # the exported model is built in float32
    with pytest.raises(SystemExit, match="choose from"):
        get_preset("v4").override(["precision=half"])
