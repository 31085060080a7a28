"""`edge-app calibrate` (refusal, CIs, audit fields, --apply / --reset) and the scope keys of classify / evaluate."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_app.cli import main
from edge_app.cli.calibrate import MIN_MALIGNANT
from edge_app.site import SITE_FILE
from edge_app.training import ood_images
from tests.conftest import make_lesion_image

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SCOPE_MODEL = FIXTURES / "tiny_scope_fp16.tflite"
OLD_MODEL = FIXTURES / "tiny_fp16.tflite"


def _write_set(root: Path, malignant_lesions: int, benign_lesions: int, images_per_lesion: int = 1) -> Path:
    (root / "img").mkdir(parents=True, exist_ok=True)
    rows = ["file,label,lesion_id"]
    for lesion in range(malignant_lesions + benign_lesions):
        label = "malignant" if lesion < malignant_lesions else "benign"
        for k in range(images_per_lesion):
            name = f"img/{lesion}_{k}.png"
            cv2.imwrite(str(root / name), make_lesion_image(160, 120, seed=lesion * 10 + k))
            rows.append(f"{name},{label},L{lesion}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root / "labels.csv"


@pytest.fixture(scope="module")
def clinic_set(tmp_path_factory) -> Path:
    return _write_set(tmp_path_factory.mktemp("clinic"), malignant_lesions=32, benign_lesions=28)


def _run_json(capsys, argv: list[str]) -> tuple[int, dict]:
    code = main(argv)
    out = capsys.readouterr().out
    return code, json.loads(out.strip().splitlines()[-1]) if out.strip().startswith("{") else {}


def test_calibrate_refuses_fewer_than_30_malignant_lesions_and_writes_nothing(tmp_path, capsys):
    labels = _write_set(tmp_path / "set", malignant_lesions=MIN_MALIGNANT - 1, benign_lesions=10, images_per_lesion=2)
    data = tmp_path / "device"
    code = main(["calibrate", str(labels), "--apply", "--data-dir", str(data), "--model", str(OLD_MODEL)])
    err = capsys.readouterr().err
    assert code == 2
    # 58 images, 29 lesions
    assert f"has {MIN_MALIGNANT - 1} malignant lesions; calibrating needs at least {MIN_MALIGNANT}" in err
    assert not (data / SITE_FILE).exists()


def test_calibrate_reports_expected_sensitivity_and_specificity_with_lesion_grouped_cis(clinic_set, tmp_path, capsys):
    code, report = _run_json(capsys, ["calibrate", str(clinic_set), "--json", "--bootstrap", "200",
                                      "--data-dir", str(tmp_path / "device"), "--model", str(OLD_MODEL)])
    assert code == 0 and report["applied"] is False
    exp = report["expected"]
    assert exp["bootstrap"] == {"resamples": 200, "unit": "group", "groups": 60}
    for key in ("sensitivity", "specificity"):
        lo, hi = exp[key]["ci95"]
        assert lo <= exp[key]["value"] <= hi
        assert hi - lo > 0  # a real interval, not a point
    assert exp["sensitivity"]["value"] >= 0.90  # the target holds on the set itself
    assert report["counts"]["malignant_cases"] == 32 and report["counts"]["case_unit"] == "lesions"
    assert not (tmp_path / "device" / SITE_FILE).exists()


def test_calibrate_apply_records_the_audit_fields_and_reset_returns_to_the_model(clinic_set, tmp_path, capsys):
    data = tmp_path / "device"
    code, report = _run_json(capsys, ["calibrate", str(clinic_set), "--apply", "--json", "--bootstrap", "100",
                                      "--data-dir", str(data), "--model", str(OLD_MODEL)])
    assert code == 0 and report["applied"]
    site = json.loads((data / SITE_FILE).read_text())
    assert site["threshold"] == report["threshold"]
    assert site["model_sha256"] == hashlib.sha256(OLD_MODEL.read_bytes()).hexdigest()
    assert site["applied_at"].endswith("Z") and site["applied_at"][:4].isdigit()
    h = hashlib.sha256(clinic_set.read_bytes())
    for line in clinic_set.read_text().splitlines()[1:]:
        h.update(hashlib.sha256((clinic_set.parent / line.split(",")[0]).read_bytes()).digest())
    assert site["set_sha256"] == h.hexdigest()
    assert site["counts"]["images"] == 60 and site["counts"]["malignant_images"] == 32 and site["counts"]["lesions"] == 60
    audit = [json.loads(line) for line in (data / "audit.log").read_text().splitlines()]
    assert audit[-1]["event"] == "site_threshold_applied" and audit[-1]["set_sha256"] == site["set_sha256"]

    assert main(["calibrate", "--reset", "--data-dir", str(data)]) == 0
    assert "model's own threshold is in force" in capsys.readouterr().out
    assert not (data / SITE_FILE).exists()
    assert json.loads((data / "audit.log").read_text().splitlines()[-1])["event"] == "site_threshold_reset"


def test_calibrate_without_a_set_or_with_a_bad_target_explains(tmp_path, capsys):
    assert main(["calibrate", "--data-dir", str(tmp_path)]) == 2
    assert "give LABELS.csv" in capsys.readouterr().err
    assert main(["calibrate", "x.csv", "--min-sensitivity", "1.5", "--data-dir", str(tmp_path)]) == 2
    assert "--min-sensitivity must be" in capsys.readouterr().err


def test_classify_json_prints_scope_for_a_scoped_model_and_null_for_an_old_one(tmp_path, capsys):
    lesion, noise = tmp_path / "lesion.png", tmp_path / "noise.png"
    cv2.imwrite(str(lesion), make_lesion_image(160, 120, seed=5002, vignette=True))
    cv2.imwrite(str(noise), ood_images.noise(0))
    assert main(["classify", str(lesion), str(noise), "--json", "--model", str(SCOPE_MODEL)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows[0]["in_scope"] is True and rows[0]["decision"] in ("benign", "malignant")
    # noise also fails the quality gate (no lesion), but it is told it is not dermoscopy (the app stores the same)
    assert rows[1]["in_scope"] is False and rows[1]["decision"] == "out_of_scope" and rows[1]["quality_flags"] == ["no_lesion"]
    assert rows[1]["scope_score"] > rows[0]["scope_score"]
    assert main(["classify", str(lesion), "--json", "--model", str(OLD_MODEL)]) == 0
    old = json.loads(capsys.readouterr().out)
    assert old["in_scope"] is None and old["scope_score"] is None


def test_evaluate_reports_the_out_of_scope_rate_and_in_scope_metrics_apart(tmp_path, capsys):
    (tmp_path / "img").mkdir()
    rows = ["file,label"]
    for i in range(16):
        name = f"img/{i}.png"
        cv2.imwrite(str(tmp_path / name), make_lesion_image(160, 120, seed=5000 + i, vignette=i % 2 == 0))
        rows.append(f"{name},{'malignant' if i % 2 else 'benign'}")
    for i, (_, frame) in enumerate(ood_images.generate(("flat", "text"), per_kind=2, seed=9)):
        cv2.imwrite(str(tmp_path / f"img/ood{i}.png"), frame)
        rows.append(f"img/ood{i}.png,benign")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    code, report = _run_json(capsys, ["evaluate", str(tmp_path / "labels.csv"), "--json", "--bootstrap", "30",
                                      "--model", str(SCOPE_MODEL)])
    assert code == 0
    assert report["n"] == 20  # all images, as before
    assert report["n_out_of_scope"] >= 4
    assert report["out_of_scope_rate"] == pytest.approx(report["n_out_of_scope"] / 20, abs=1e-4)
    assert report["in_scope"]["n"] == 20 - report["n_out_of_scope"]
    code, old = _run_json(capsys, ["evaluate", str(tmp_path / "labels.csv"), "--json", "--bootstrap", "30",
                                   "--model", str(OLD_MODEL)])
    assert old["out_of_scope_rate"] is None and old["in_scope"] is None
    assert np.isfinite(old["auc"]["value"])
