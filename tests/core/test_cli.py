import json

import cv2
import pytest

from edge_app.cli import main
from tests.conftest import dermoscopy_image, make_lesion_image


def _json_lines(text):
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_classify_reports_each_file_and_fails_only_the_unreadable_ones(tmp_path, model_path, capsys):
    good = tmp_path / "good.jpg"
    cv2.imwrite(str(good), dermoscopy_image(800, 600))
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    code = main(["classify", str(good), str(bad), str(good), "--json", "--model", str(model_path)])
    out = capsys.readouterr()
    assert code != 0
    rows = _json_lines(out.out)
    assert [r["file"] for r in rows] == [str(good), str(bad), str(good)]
    assert rows[0]["decision"] in ("benign", "malignant") and "total" in rows[0]["timings_ms"]
    assert "error" in rows[1] and "bad.jpg" in out.err


def test_classify_human_output_names_the_decision(tmp_path, model_path, capsys):
    img = tmp_path / "x.png"
    cv2.imwrite(str(img), make_lesion_image(300, 200))
    assert main(["classify", str(img), "--model", str(model_path)]) == 0
    assert "p(malignant)=" in capsys.readouterr().out


def test_classify_with_a_broken_model_path_explains_and_exits_nonzero(tmp_path, capsys):
    assert main(["classify", "x.jpg", "--model", str(tmp_path / "missing.tflite")]) == 3
    assert "not found" in capsys.readouterr().err


@pytest.fixture
def labelled_folder(tmp_path):
    rows = ["file,label,extra"]
    for i in range(12):
        name = f"img/{i}.jpg"
        (tmp_path / "img").mkdir(exist_ok=True)
        cv2.imwrite(str(tmp_path / name), make_lesion_image(240, 180, seed=i))
        rows.append(f"{name},{'malignant' if i % 3 == 0 else 'benign'},x")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    return tmp_path


def test_evaluate_prints_metrics_as_json(labelled_folder, model_path, capsys):
    code = main(["evaluate", str(labelled_folder / "labels.csv"), "--json", "--bootstrap", "50", "--model", str(model_path)])
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert report["n"] == 12
    assert {"auc", "sensitivity", "specificity", "balanced_accuracy", "threshold", "confusion"} <= set(report)
    assert sum(report["confusion"].values()) == 12
    assert report["bootstrap"] == {"resamples": 50, "unit": "image"}  # no lesion_id column: images are resampled


def test_evaluate_resamples_lesions_when_the_csv_has_lesion_ids(labelled_folder, model_path, capsys):
    rows = (labelled_folder / "labels.csv").read_text().splitlines()
    grouped = ["file,label,lesion_id"] + [f"{r.rsplit(',', 1)[0]},L{i // 3}" for i, r in enumerate(rows[1:])]
    (labelled_folder / "grouped.csv").write_text("\n".join(grouped) + "\n")
    assert main(["evaluate", str(labelled_folder / "grouped.csv"), "--bootstrap", "50", "--model", str(model_path)]) == 0
    assert "bootstrap resamples of 4 lesions" in capsys.readouterr().out


def test_evaluate_rejects_a_label_that_is_not_benign_or_malignant(labelled_folder, model_path, capsys):
    (labelled_folder / "labels.csv").write_text("file,label\nimg/0.jpg,mel\n")
    assert main(["evaluate", str(labelled_folder / "labels.csv"), "--model", str(model_path)]) == 2
    assert "not benign or malignant" in capsys.readouterr().err
