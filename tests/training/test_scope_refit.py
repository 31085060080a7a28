"""`edge-train scope`: refit an exported model's scope check through the device runtime.

The tiny test model and the tiny stand-in scope network (`--net`) are untrained, so what is checked is what a
user of the command relies on: the student .tflite is untouched, the sidecar, manifest and scope network are
replaced together and the model loads as the app loads it, a broken run leaves the old files, and the manifest
says what the check was fitted on and how it fares on held-out patients and sources.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import shutil
from pathlib import Path

import cv2
import pytest

from edge_app.manifest import sha256_file
from edge_app.runtime import Classifier
from edge_app.training import ood_images
from edge_app.training.cli import main
from tests.conftest import make_lesion_image

pytest.importorskip("sklearn")
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
NET = FIXTURES / "tiny_scope_net.tflite"
FAST = ["--train-sample", "30", "--generated-per-kind", "3", "--net", str(NET)]


def _model(tmp_path: Path) -> Path:
    folder = tmp_path / "models"
    folder.mkdir()
    for suffix in (".tflite", ".json", ".aux.npz"):
        shutil.copy(FIXTURES / f"tiny_scope_fp16{suffix}", folder / f"tiny_scope_fp16{suffix}")
    return folder / "tiny_scope_fp16.tflite"


def _write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def _data(tmp_path: Path, n: int = 60, phone: int = 10) -> tuple[Path, Path]:
    """`data/synth/`: dermoscopy-like frames, val/test split CSVs naming a third of them; `data/pad_ufes20/`:
    phone-photo-like frames (a lesion in a field of skin), one patient each."""
    root, splits = tmp_path / "data", tmp_path / "models" / "splits"
    (root / "synth" / "images").mkdir(parents=True)
    (root / "pad_ufes20" / "images").mkdir(parents=True)
    splits.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        name = f"images/s{i:03d}.jpg"
        cv2.imwrite(str(root / "synth" / name), make_lesion_image(160, 120, seed=i, vignette=i % 2 == 0))
        rows.append({"file": name, "label": "malignant" if i % 3 == 0 else "benign", "lesion_id": f"L{i}"})
    _write_csv(root / "synth" / "labels.csv", rows)
    for name, part in (("val", rows[:10]), ("test", rows[10:20])):
        _write_csv(splits / f"{name}.csv", [{**r, "file": f"synth/{r['file']}", "dataset": "synth"} for r in part])
    photos = []
    for i in range(phone):
        name = f"images/PAT_{i}_{i}.jpg"
        frame = ood_images.lesion_on_skin(i, make_lesion_image(160, 120, seed=500 + i), 0.2)
        cv2.imwrite(str(root / "pad_ufes20" / name), cv2.resize(frame, (300, 300)))
        photos.append({"file": name, "label": "benign", "kind": "phone_photo", "lesion_id": str(i), "patient_id": f"PAT_{i}"})
    _write_csv(root / "pad_ufes20" / "labels.csv", photos)
    return root, splits


@pytest.fixture(scope="module")
def refitted(tmp_path_factory) -> tuple[Path, dict, dict[str, str]]:
    """One refit, shared: (the model, the printed block, sha256 of each file before)."""
    tmp_path = tmp_path_factory.mktemp("refit")
    model = _model(tmp_path)
    root, _ = _data(tmp_path)
    before = {p.name: sha256_file(p) for p in model.parent.glob("tiny_scope_fp16.*")}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["scope", str(model), "--data", str(root), *FAST]) == 0
    return model, json.loads(out.getvalue()), before


def test_refit_replaces_sidecar_manifest_and_scope_network_together_and_leaves_the_model_file_alone(refitted):
    model, block, before = refitted
    assert block["fitted_by"].startswith("edge-train scope ")
    assert block["net_phone_photos_held_out_patients"]["n"] == 10 and block["net_phone_photos_held_out_patients"]["folds"] == 5
    assert block["net_phone_photos_no_phone_in_fit"]["n"] == 10
    assert block["val_flagged_by_dataset"]["synth"]["n"] == 10 and block["test_flagged_by_dataset"]["synth"]["n"] == 10
    assert {"phone_as_ham10000_200x150", "dermoscopy_as_phone_300x300"} <= set(block["net_shortcut_checks"])
    assert sha256_file(model) == before["tiny_scope_fp16.tflite"]
    assert sha256_file(model.with_name("tiny_scope_fp16.aux.npz")) != before["tiny_scope_fp16.aux.npz"]
    net = model.with_name("tiny_scope_fp16.scope.tflite")
    assert net.read_bytes() == NET.read_bytes()
    clf = Classifier(model, num_threads=1)  # sha256s and the self-tests (student, scope, scope network) hold
    assert clf.scope_net is not None and clf.sidecar.scope.net is not None and clf.manifest.scope == block
    assert clf.manifest.scope_model["sha256"] == sha256_file(net)
    assert json.loads(model.with_suffix(".json").read_text())["format"] == 2
    result = clf.classify(make_lesion_image(160, 120, seed=3, vignette=True))
    assert result.scope_threshold == 0.0 and "scope" in result.timings_ms


def test_a_model_whose_scope_network_is_missing_or_altered_is_refused(refitted, tmp_path):
    from edge_app.runtime import ModelError

    folder = tmp_path / "copy"
    shutil.copytree(refitted[0].parent, folder)
    model, net = folder / "tiny_scope_fp16.tflite", folder / "tiny_scope_fp16.scope.tflite"
    good = net.read_bytes()
    net.write_bytes(good[:-9] + b"X" + good[-8:])
    with pytest.raises(ModelError, match="does not match its manifest"):
        Classifier(model, num_threads=1)
    net.unlink()
    with pytest.raises(ModelError, match="scope network .* not found"):
        Classifier(model, num_threads=1)


def test_refit_without_the_datasets_the_splits_name_fails_clearly_and_changes_nothing(tmp_path, capsys):
    model = _model(tmp_path)
    _, _ = _data(tmp_path)
    before = {p.name: p.read_bytes() for p in model.parent.glob("tiny_scope_fp16.*")}
    assert main(["scope", str(model), "--data", str(tmp_path / "elsewhere"), *FAST]) == 2
    assert "labels.csv not found" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in model.parent.glob("tiny_scope_fp16.*")} == before


def test_refit_of_a_model_without_a_features_output_is_refused(tmp_path, capsys):
    folder = tmp_path / "old"
    folder.mkdir()
    for suffix in (".tflite", ".json"):
        shutil.copy(FIXTURES / f"tiny_fp16{suffix}", folder / f"tiny_fp16{suffix}")
    root, splits = _data(tmp_path)
    assert main(["scope", str(folder / "tiny_fp16.tflite"), "--data", str(root), "--splits", str(splits), *FAST]) == 2
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
        scope_refit.refit(model, root, splits, train_sample=20, log=lambda m: None, net_file=NET, per_kind=3)
    assert {p.name: p.read_bytes() for p in model.parent.glob("tiny_scope_fp16.*")} == before  # no scope network left
    assert not list(model.parent.glob("*.tmp"))
    real(model, num_threads=1)


def test_refit_rewrites_the_scope_section_of_the_card_beside_the_model_once(tmp_path):
    from edge_app.training import scope_refit

    model = _model(tmp_path)
    root, splits = _data(tmp_path)
    card = model.parent / "MODEL_CARD.md"
    card.write_text("# card\n\n## Results\n\nAUC 0.9\n\n## Where each step ran\n\nhere\n")
    for _ in range(2):  # the second run reads the described images back from the cache
        block = scope_refit.refit(model, root, splits, train_sample=20, log=lambda m: None, net_file=NET, per_kind=3,
                                  cache=tmp_path / "described.npz")
    text = card.read_text()
    assert text.count("## Scope check") == 1 and text.index("## Results") < text.index("## Scope check") < text.index("## Where")
    synth = block["val_flagged_by_dataset"]["synth"]
    assert f"| synth | {synth['flagged']:.1%} (n 10) |" in text
    assert "patient-grouped CV" in text and "| phone as ham10000 200x150 |" in text and "AUC 0.9" in text
