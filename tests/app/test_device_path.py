"""One device path: the app, `edge-app classify`, `edge-app evaluate` and `edge-bench` agree,
and what was screened is what is stored."""

from __future__ import annotations

import csv
import io
import json
from hashlib import sha256

import pytest
from PIL import Image

from edge_app.bench import main as bench
from edge_app.cli import main as cli
from edge_app.images import encode_jpeg
from tests.app.conftest import lesion_image, model_path
from tests.conftest import make_lesion_image


def upload(client, data: bytes, name: str = "lesion.jpg"):
    return client.post("/api/screenings", data={"image": (io.BytesIO(data), name)}, content_type="multipart/form-data")


@pytest.mark.parametrize("size", [(150, 200), (960, 1280)], ids=["dermoscopy-200x150", "camera-1280x960"])
def test_app_classify_evaluate_and_bench_give_the_same_probability_for_the_same_file(client, tmp_path, capsys, size):
    path = tmp_path / "images" / "lesion.jpg"
    path.parent.mkdir()
    path.write_bytes(encode_jpeg(lesion_image(3, size=size), 92))
    model = str(model_path())

    app_p = upload(client, path.read_bytes()).get_json()["malignant_probability"]

    assert cli(["classify", str(path), "--json", "--model", model]) == 0
    classify_p = json.loads(capsys.readouterr().out)["malignant_probability"]

    labels = tmp_path / "labels.csv"
    labels.write_text("file,label\nimages/lesion.jpg,benign\nimages/lesion.jpg,malignant\n")
    predictions = tmp_path / "predictions.csv"
    assert cli(["evaluate", str(labels), "--model", model, "--bootstrap", "5", "--predictions", str(predictions)]) == 0
    evaluate_p = [float(r["p_malignant"]) for r in csv.DictReader(predictions.open())]
    capsys.readouterr()

    assert bench(["--images", str(tmp_path / "images"), "--runs", "2", "--warmup", "0", "--model", model, "--json"]) == 0
    (result,) = json.loads(capsys.readouterr().out)["results"]

    assert classify_p == pytest.approx(app_p, abs=1e-6)
    assert result["probability"] == pytest.approx(app_p, abs=1e-6)
    assert evaluate_p == [pytest.approx(app_p, abs=1e-6)] * 2


def test_a_12_megapixel_phone_photo_is_stored_byte_identical_with_the_sha256_of_its_bytes(client):
    data = encode_jpeg(make_lesion_image(4000, 3000, seed=5), 90)
    r = upload(client, data, "IMG_0001.JPG")
    assert r.status_code == 201, r.get_json()
    rec = r.get_json()
    assert (rec["image_width"], rec["image_height"]) == (4000, 3000)
    assert rec["image_sha256"] == sha256(data).hexdigest() and rec["image_bytes"] == len(data)
    stored = client.get(rec["image_url"])
    assert stored.data == data and stored.mimetype == "image/jpeg"
    thumb = Image.open(io.BytesIO(client.get(rec["thumbnail_url"]).data))
    assert thumb.format == "JPEG" and max(thumb.size) <= 300
    assert rec["timings_ms"]["decode"] > 0 and rec["timings_ms"]["total"] >= rec["timings_ms"]["decode"]


def test_a_camera_capture_is_stored_as_one_jpeg_of_the_full_frame(client, camera):
    rec = client.post("/api/screenings").get_json()
    stored = Image.open(io.BytesIO(client.get(rec["image_url"]).data))
    h, w = camera.frames[0].shape[:2]
    assert stored.format == "JPEG" and stored.size == (w, h) == (rec["image_width"], rec["image_height"])
    assert {"capture", "encode"} <= rec["timings_ms"].keys()
