"""`edge-train scope`: refit an exported model's scope check through the device runtime (no TensorFlow).

The tiny test model is untrained, so what is checked is what a user of the command relies on: the .tflite
is untouched, the sidecar and manifest are replaced together and the model loads as the app loads it, a
broken run leaves the old files, and the manifest says what the check was fitted on.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import cv2
import pytest

from edge_app.manifest import sha256_file
from edge_app.runtime import Classifier
from edge_app.training.cli import main
from tests.conftest import make_lesion_image

pytest.importorskip("sklearn")
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _model(tmp_path: Path) -> Path:
    folder = tmp_path / "models"
    folder.mkdir()
    for suffix in (".tflite", ".json", ".aux.npz"):
        shutil.copy(FIXTURES / f"tiny_scope_fp16{suffix}", folder / f"tiny_scope_fp16{suffix}")
    return folder / "tiny_scope_fp16.tflite"


def _data(tmp_path: Path, n: int = 60) -> tuple[Path, Path]:
    """A dataset folder `data/synth/` of dermoscopy-like frames, and val/test split CSVs naming a third of them."""
    root, splits = tmp_path / "data", tmp_path / "models" / "splits"
    (root / "synth" / "images").mkdir(parents=True)
    splits.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        name = f"images/s{i:03d}.jpg"
        cv2.imwrite(str(root / "synth" / name), make_lesion_image(160, 120, seed=i, vignette=i % 2 == 0))
        rows.append({"file": name, "label": "malignant" if i % 3 == 0 else "benign", "lesion_id": f"L{i}"})
    with open(root / "synth" / "labels.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["file", "label", "lesion_id"])
        w.writeheader()
        w.writerows(rows)
    for name, part in (("val", rows[:10]), ("test", rows[10:20])):
        with open(splits / f"{name}.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["file", "label", "lesion_id", "dataset"])
            w.writeheader()
            w.writerows({**r, "file": f"synth/{r['file']}", "dataset": "synth"} for r in part)
    return root, splits


def test_refit_replaces_sidecar_and_manifest_together_and_leaves_the_model_file_alone(tmp_path, capsys):
    model = _model(tmp_path)
    root, _ = _data(tmp_path)
    before = {p.suffix: sha256_file(p) for p in model.parent.glob("tiny_scope_fp16.*")}
    assert main(["scope", str(model), "--data", str(root), "--train-sample", "30"]) == 0
    block = json.loads(capsys.readouterr().out)
    assert block["n_train"] == 30 and block["n_val"] == 10 and block["n_augmented"] == 30
    assert block["negatives"]["lesion_on_skin"] == 30 and "skin_photo" in block["leave_one_kind_out_flagged"]
    assert block["fitted_by"].startswith("edge-train scope ")
    assert sha256_file(model) == before[".tflite"]
    assert sha256_file(model.with_name("tiny_scope_fp16.aux.npz")) != before[".npz"]
    clf = Classifier(model, num_threads=1)  # sha256s and both self-tests hold
    assert clf.sidecar.scope.head is not None and clf.manifest.scope == block
    assert clf.classify(make_lesion_image(160, 120, seed=3, vignette=True)).scope_threshold == 0.0


def test_refit_without_the_datasets_the_splits_name_fails_clearly_and_changes_nothing(tmp_path, capsys):
    model = _model(tmp_path)
    _, _ = _data(tmp_path)
    before = {p.name: p.read_bytes() for p in model.parent.glob("tiny_scope_fp16.*")}
    assert main(["scope", str(model), "--data", str(tmp_path / "elsewhere")]) == 2
    assert "labels.csv not found" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in model.parent.glob("tiny_scope_fp16.*")} == before


def test_refit_of_a_model_without_a_features_output_is_refused(tmp_path, capsys):
    folder = tmp_path / "old"
    folder.mkdir()
    for suffix in (".tflite", ".json"):
        shutil.copy(FIXTURES / f"tiny_fp16{suffix}", folder / f"tiny_fp16{suffix}")
    root, splits = _data(tmp_path)
    assert main(["scope", str(folder / "tiny_fp16.tflite"), "--data", str(root), "--splits", str(splits)]) == 2
    assert "no features output" in capsys.readouterr().err


def test_a_refit_whose_result_does_not_load_puts_the_old_sidecar_and_manifest_back(tmp_path, monkeypatch):
    from edge_app import runtime
    from edge_app.training import scope_refit

    model = _model(tmp_path)
    root, splits = _data(tmp_path)
    before = {p.name: p.read_bytes() for p in model.parent.glob("tiny_scope_fp16.*")}
    real, calls = runtime.Classifier, []

    def fails_on_reload(*args, **kwargs):
        calls.append(args)
        if len(calls) > 1:  # the check after writing: as if the new files were unusable
            raise runtime.ModelError("simulated: the refitted model does not load")
        return real(*args, **kwargs)

    monkeypatch.setattr(runtime, "Classifier", fails_on_reload)
    with pytest.raises(runtime.ModelError, match="simulated"):
        scope_refit.refit(model, root, splits, train_sample=20, log=lambda m: None)
    assert {p.name: p.read_bytes() for p in model.parent.glob("tiny_scope_fp16.*")} == before
    assert not list(model.parent.glob("*.tmp"))
    real(model, num_threads=1)


def test_refit_rewrites_the_scope_section_of_the_card_beside_the_model_once(tmp_path):
    from edge_app.training import scope_refit

    model = _model(tmp_path)
    root, splits = _data(tmp_path)
    card = model.parent / "MODEL_CARD.md"
    card.write_text("# card\n\n## Results\n\nAUC 0.9\n\n## Where each step ran\n\nhere\n")
    for _ in range(2):
        block = scope_refit.refit(model, root, splits, train_sample=20, log=lambda m: None)
    text = card.read_text()
    assert text.count("## Scope check") == 1 and text.index("## Results") < text.index("## Scope check") < text.index("## Where")
    assert f"{block['val_flagged']:.1%} of 10 validation images flagged" in text
    assert "| skin photo |" in text and "AUC 0.9" in text
