"""The app with a scoped model: out-of-scope uploads get no verdict, the heatmap is served and shown,
the threshold in force (model default or site) is shown and stored, old databases migrate."""

from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_app.decisions import LABELS
from edge_app.images import encode_jpeg
from edge_app.runtime import Classifier
from edge_app.site import SITE_FILE, SiteThreshold, save_site
from edge_app.store import SCHEMA, ScreeningStore
from edge_app.training import ood_images
from tests.conftest import TINY_MODEL, make_lesion_image

SCOPE_MODEL = Path(__file__).resolve().parents[1] / "fixtures" / "tiny_scope_fp16.tflite"
IN_SCOPE_SEED = 5002  # with a vignette: the tiny model was fitted on such frames (its verdicts on others are arbitrary)


@pytest.fixture(scope="module")
def scoped_classifier() -> Classifier:
    return Classifier(SCOPE_MODEL, num_threads=1)


@pytest.fixture
def scoped_client(make_app, scoped_classifier):
    app = make_app(CLASSIFIER=scoped_classifier)
    return app.test_client()


def upload(client, frame: np.ndarray):
    return client.post("/api/screenings", data={"image": (io.BytesIO(encode_jpeg(frame, 92)), "x.jpg")},
                       content_type="multipart/form-data")


def test_an_upload_that_is_not_dermoscopy_is_stored_as_out_of_scope_with_no_verdict(scoped_client):
    r = upload(scoped_client, ood_images.text(3))
    assert r.status_code == 201, r.get_json()
    rec = r.get_json()
    assert rec["decision"] == "out_of_scope" and rec["verdict"] is False
    assert rec["in_scope"] is False and rec["scope_score"] is not None
    assert "through the dermatoscope: lesion centred" in rec["scope"]["message"]  # what a dermoscopy image looks like
    assert 0.0 <= rec["malignant_probability"] <= 1.0  # kept for audit
    page = scoped_client.get(f"/screenings/{rec['id']}").get_data(as_text=True)
    assert LABELS["out_of_scope"] in page and "No verdict: out of scope." in page and "Low suspicion" not in page
    csv_text = scoped_client.get("/export.csv").get_data(as_text=True)
    assert ",out_of_scope," in csv_text
    assert scoped_client.get("/api/stats").get_json()["counts"]["decision_out_of_scope"] == 1


def test_an_in_scope_screening_has_a_heatmap_over_its_image_and_the_detail_page_says_what_it_is(scoped_client):
    frame = make_lesion_image(160, 120, seed=IN_SCOPE_SEED, vignette=True)
    rec = upload(scoped_client, frame).get_json()
    assert rec["in_scope"] is True and rec["decision"] in ("benign", "malignant")
    assert rec["heatmap_url"]
    r = scoped_client.get(rec["heatmap_url"])
    assert r.status_code == 200 and r.mimetype == "image/png"
    heat = cv2.imdecode(np.frombuffer(r.data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert heat.ndim == 3 and heat.shape[2] == 4 and heat[..., 3].max() > 0  # transparent, with some evidence drawn
    x0, y0, x1, y1 = rec["heatmap_box"]
    assert (x1 - x0) * 640 == pytest.approx((y1 - y0) * 480, abs=2)  # the analysed square, in image fractions
    page = scoped_client.get(f"/screenings/{rec['id']}").get_data(as_text=True)
    assert rec["heatmap_url"] in page and f'data-box="{x0},{y0},{x1},{y1}"' in page
    assert "not the lesion&#39;s outline" in page or "not the lesion's outline" in page
    assert "threshold in force" in page and "model default" in page


def test_a_record_without_a_heatmap_answers_404(make_app, lesion_image):
    client = make_app(CLASSIFIER=Classifier(TINY_MODEL, num_threads=1)).test_client()  # a model exported before heatmaps
    rec = upload(client, lesion_image).get_json()
    assert not rec.get("heatmap_url")
    assert client.get(f"/api/screenings/{rec['id']}/heatmap").status_code == 404


def test_a_site_threshold_is_used_shown_and_stored_until_reset(scoped_client, scoped_classifier, tmp_path):
    data_dir = tmp_path / "data"
    frame = make_lesion_image(160, 120, seed=IN_SCOPE_SEED, vignette=True)
    before = upload(scoped_client, frame).get_json()
    assert before["threshold_source"] == "model" and before["threshold"] == pytest.approx(scoped_classifier.manifest.threshold)
    save_site(data_dir, SiteThreshold(threshold=0.0123, model_sha256=scoped_classifier.sha256, applied_at="2026-01-01T00:00:00Z",
                                      set_sha256="ab" * 32, labels_csv="clinic.csv", counts={"images": 80}, min_sensitivity=0.9))
    rec = upload(scoped_client, frame).get_json()
    assert rec["threshold_source"] == "site" and rec["threshold"] == pytest.approx(0.0123)
    assert rec["decision"] == "malignant"  # p >= 0.0123
    stats = scoped_client.get("/api/stats").get_json()["model"]
    assert stats["threshold_source"] == "site" and stats["site_calibration"]["set_sha256"] == "ab" * 32
    assert "site-calibrated" in scoped_client.application.test_client().get("/").get_data(as_text=True)
    stored = json.loads(scoped_client.get(f"/api/screenings/{rec['id']}").get_data())
    assert stored["threshold_source"] == "site"
    (data_dir / SITE_FILE).unlink()
    after = upload(scoped_client, frame).get_json()
    assert after["threshold_source"] == "model"


def test_a_site_threshold_calibrated_for_another_model_is_not_used(scoped_client, scoped_classifier, tmp_path):
    save_site(tmp_path / "data", SiteThreshold(threshold=0.0123, model_sha256="0" * 64, applied_at="2026-01-01T00:00:00Z",
                                               set_sha256="ab" * 32, labels_csv="c.csv", counts={}, min_sensitivity=0.9))
    rec = upload(scoped_client, make_lesion_image(160, 120, seed=IN_SCOPE_SEED, vignette=True)).get_json()
    assert rec["threshold_source"] == "model"
    assert rec["threshold"] == pytest.approx(scoped_classifier.manifest.threshold)
    problem = scoped_client.get("/api/stats").get_json()["site_threshold_problem"]
    assert "calibrated for model 000000000000" in problem
    assert "Site threshold not in force" in scoped_client.application.test_client().get("/").get_data(as_text=True)


def test_a_database_from_before_the_scope_columns_opens_and_keeps_its_records(tmp_path):
    db = sqlite3.connect(tmp_path / "screenings.sqlite3")
    db.executescript(SCHEMA)
    db.execute(
        "INSERT INTO screenings (id, timestamp, source, image_path, image_sha256, image_width, image_height, image_bytes, "
        "probabilities, malignant_probability, decision, threshold, model_sha256, model_version, preprocessing_version, "
        "timings_ms, quality_flags, quality_metrics, app_version) VALUES ('01JABCDEFGHJKMNPQRSTVWXYZ0', "
        "'2026-01-01T00:00:00.000Z', 'upload', 'images/2026-01-01/x.jpg', 'aa', 10, 10, 1, '{}', 0.2, 'benign', 0.39, 'm', 'v', "
        "'1.0', '{}', '[]', '{}', '0')")
    db.commit()
    db.close()
    (tmp_path / "images" / "2026-01-01").mkdir(parents=True)
    (tmp_path / "images" / "2026-01-01" / "x.jpg").write_bytes(b"x")
    store = ScreeningStore(tmp_path)
    try:
        old = store.get("01JABCDEFGHJKMNPQRSTVWXYZ0")
        assert old.threshold_source == "model" and old.in_scope is None and old.explain is None
        assert old.decision == "benign"
    finally:
        store.close()
