"""CI-sized end-to-end run: synthetic images -> split -> teacher -> students -> fp16 export -> evaluate -> card."""

from __future__ import annotations

import csv
import json

import pytest

from edge_app.manifest import Manifest, sha256_file
from edge_app.runtime import Classifier

pytestmark = pytest.mark.slow


def test_tiny_preset_trains_exports_and_the_device_runtime_loads_the_model(synthetic_dataset, make_dataset, lite_weights,
                                                                           tmp_path):
    from edge_app.training.cli import main

    # staged beside the training data: the cross-dataset check
    other = make_dataset(tmp_path / "other_clinic", n_lesions=6, seed=7)
    (other / "images" / "L000_0.jpg").write_bytes(b"not a jpeg")

    models = tmp_path / "models"
    run_dir = tmp_path / "run"
    rc = main(["all", "--preset", "tiny", "--data", str(synthetic_dataset), "--weights-dir", str(lite_weights),
               "--run-dir", str(run_dir), "--models-dir", str(models), "--cache-dir", str(tmp_path / "cache"),
               "--cross-data", str(other)])
    assert rc == 0
    model = models / "student_fp16.tflite"
    manifest = Manifest.load(models / "student_fp16.json")
    assert manifest.sha256 == sha256_file(model)
    assert manifest.input["shape"] == [1, 32, 32, 3]
    assert manifest.preprocessing["params"]["size"] == 32
    clf = Classifier(model)
    assert clf.manifest.threshold == manifest.threshold
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert {"split", "teacher", "student_ce", "student_kd", "export", "test", "ablation_retrained", "shifts", "calibration",
            "dehair"} <= set(metrics)
    # the retrained ablation trained a student per disabled stage; calibration was fitted on validation
    assert set(metrics["ablation_retrained"]) == {"full pipeline", "without dehair"}
    assert metrics["export"]["calibration"]["method"] == "platt"
    # test CIs resample lesions, not images; the other dataset was screened at the shipped threshold, its bad file counted
    assert metrics["test"]["shipped"]["bootstrap"]["unit"] == "group"
    cross = metrics["cross_dataset"]["other_clinic"]
    assert (cross["n"], cross["unreadable"], cross["threshold"]) == (11, 1, manifest.threshold)
    card = (models / "MODEL_CARD.md").read_text()
    assert "Cross-dataset check" in card and "| other_clinic | 11 (6) |" in card
    # the teacher backbone was fine-tuned (not just probed) and the KD pair was picked from the grid on validation
    ft = metrics["teacher"]["finetune"]["lite0"]
    assert ft["trainable_params"] < ft["params"] and len(ft["epochs"]) == 1
    assert (run_dir / "teacher_lite0.weights.h5").is_file()
    grid = metrics["student_kd"]["grid"]
    assert [(g["alpha"], g["temperature"]) for g in grid] == [(0.7, 2.0), (0.3, 4.0)]
    best = max(grid, key=lambda g: g["best_val_auc"])
    assert (metrics["student_kd"]["alpha"], metrics["student_kd"]["temperature"]) == (best["alpha"], best["temperature"])
    assert (models / "splits" / "test.csv").is_file() and (models / "MODEL_CARD.md").is_file()
    for png in ("roc.png", "confusion.png", "reliability.png"):
        assert (models / png).stat().st_size > 1000

    # the input-size study against the same run: each size trained, exported and timed on the device path
    assert main(["input-size", "--preset", "tiny", "--data", str(synthetic_dataset), "--weights-dir", str(lite_weights),
                 "--run-dir", str(run_dir), "--models-dir", str(models), "--cache-dir", str(tmp_path / "cache")]) == 0
    study = json.loads((run_dir / "metrics.json").read_text())["input_size"]
    assert set(study["sizes"]) == {"24", "32"}
    for size, r in study["sizes"].items():
        assert 0.0 <= r["val_auc"] <= 1.0 and r["latency_p50_ms"]["end_to_end"] > r["latency_p50_ms"]["inference"] > 0
        assert Classifier(run_dir / "input_size" / f"student_{size}px.tflite").manifest.input_size == int(size)
    assert study["sizes"]["32"]["end_to_end_ratio_to_shipped_size"] == 1.0
    # the card, written again, carries the study's table
    assert main(["card", "--preset", "tiny", "--data", str(synthetic_dataset), "--run-dir", str(run_dir),
                 "--models-dir", str(models)]) == 0
    card = (models / "MODEL_CARD.md").read_text()
    assert "### Input size (accuracy vs latency)" in card and "| 32 px (shipped) |" in card


def test_a_cross_dataset_folder_without_labels_is_refused_before_any_work(synthetic_dataset, tmp_path):
    from edge_app.training.cli import main

    with pytest.raises(SystemExit, match="no labels.csv there"):
        main(["split", "--preset", "tiny", "--data", str(synthetic_dataset), "--run-dir", str(tmp_path / "run"),
              "--cross-data", str(tmp_path / "nowhere")])


def test_two_sources_train_together_and_leave_one_source_out_scores_each_on_images_it_never_saw(make_dataset, lite_weights,
                                                                                                   tmp_path):
    from edge_app.training.cli import main

    data = tmp_path / "data"
    make_dataset(data / "clinic_a", n_lesions=16, seed=1)
    make_dataset(data / "clinic_b", n_lesions=16, seed=2)
    run_dir, models = tmp_path / "run", tmp_path / "models"
    args = ["--preset", "tiny", "--data", str(data), "--weights-dir", str(lite_weights), "--run-dir", str(run_dir),
            "--models-dir", str(models), "--cache-dir", str(tmp_path / "cache"), "--set", "datasets=clinic_a,clinic_b",
            "--set", "teacher_backbones=", "--set", "ablation_stages=", "--set", "dataset_share=clinic_b:0.3",
            "--set", "max_sample_weight=3", "--set", "mixup_alpha=0.2", "--set", "ema_momentum=0.9"]
    assert main(["all", *args]) == 0
    assert main(["loso", *args]) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    # both sources split on their own; loss weights per source as configured (clinic_b: 30% of the total)
    assert set(metrics["split"]["per_source"]) == {"clinic_a", "clinic_b"}
    weights = metrics["split"]["loss_weights"]["clinic_b"]
    assert weights["benign_share"] + weights["malignant_share"] == pytest.approx(0.3, abs=0.02)
    assert set(metrics["shortcuts"]["sources"]) == {"clinic_a", "clinic_b"}
    student = metrics["student_ce"]
    assert student["train_img_per_s"] > 0 and student["input"] == "resident uint8 passes" and student["precision"] == "float32"
    # each source scored by a student that never saw it, on its training + validation images only (its test split unseen)
    splits = {s: list(csv.DictReader((run_dir / "splits" / f"{s}.csv").read_text().splitlines()))
              for s in ("train", "val", "test")}
    loso = json.loads((run_dir / "loso.json").read_text())
    assert loso == metrics["loso"] and set(loso["sources"]) == {"clinic_a", "clinic_b"}
    for source, r in loso["sources"].items():
        held = [row for s in ("train", "val") for row in splits[s] if row["dataset"] == source]
        others = [row for row in splits["train"] if row["dataset"] != source]
        assert r["n"] == len(held) and r["n_train"] == len(others)
        assert r["auc"]["ci95"][0] <= r["auc"]["value"] <= r["auc"]["ci95"][1]
        assert set(r["threshold_per_other_source"]) == {"clinic_a", "clinic_b"} - {source}
    assert main(["card", *args]) == 0
    card = (models / "MODEL_CARD.md").read_text()
    assert "### Leave-one-source-out" in card and "| clinic_a | " in card and "### Shortcut check per source" in card
    assert "images/s" in card
