"""The JSON API through the Flask test client: fake camera, real SQLite store, real model."""

from __future__ import annotations

import csv
import io
import threading
from pathlib import Path

import pytest

from edge_app.images import encode_jpeg
from tests.app.conftest import lesion_image, lesion_jpeg, wait_for

RECORD_FIELDS = {
    "id", "timestamp", "operator", "lesion_ref", "image_path", "image_sha256", "probabilities", "decision", "threshold",
    "model_sha256", "model_version", "preprocessing_version", "timings_ms", "quality_flags",
}
MODEL_STAGES = {"crop", "resize", "dehair", "denoise", "contrast", "normalize", "inference", "total"}


def upload(client, data: bytes, name: str = "lesion.jpg", **fields):
    return client.post("/api/screenings", data={"image": (io.BytesIO(data), name), **fields}, content_type="multipart/form-data")


def stored_files(app) -> list[Path]:
    root = Path(app.config["DATA_DIR"]) / "images"
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_capture_from_the_live_camera_returns_a_complete_record(client, camera):
    r = client.post("/api/screenings", data={"operator": "Amina", "lesion_ref": "P-7 left forearm"})
    assert r.status_code == 201, r.get_json()
    rec = r.get_json()
    assert RECORD_FIELDS <= rec.keys()
    assert rec["source"] == "fake" and camera.captures == 1
    assert rec["operator"] == "Amina" and rec["lesion_ref"] == "P-7 left forearm"
    assert abs(sum(rec["probabilities"].values()) - 1.0) < 1e-3
    assert rec["decision"] in ("benign", "malignant")
    assert (rec["malignant_probability"] >= rec["threshold"]) == (rec["decision"] == "malignant")
    assert MODEL_STAGES | {"capture", "quality", "end_to_end"} <= rec["timings_ms"].keys()
    assert rec["quality"]["ok"] and rec["quality_flags"] == [] and rec["please_retake"] is False
    assert len(rec["id"]) == 26 and r.headers["Location"].endswith(rec["id"])
    # the stored record and image match what was returned
    got = client.get(f"/api/screenings/{rec['id']}").get_json()
    assert got["image_sha256"] == rec["image_sha256"] and got["decision"] == rec["decision"]
    img = client.get(rec["image_url"])
    assert img.status_code == 200 and img.mimetype == "image/jpeg"
    import hashlib

    assert hashlib.sha256(img.data).hexdigest() == rec["image_sha256"]
    assert client.get(rec["thumbnail_url"]).status_code == 200


def test_upload_is_screened_and_stored(client):
    r = upload(client, lesion_jpeg(5), operator="Ben")
    assert r.status_code == 201
    rec = r.get_json()
    assert rec["source"] == "upload" and rec["image_width"] == 640 and rec["image_height"] == 480
    assert "capture" not in rec["timings_ms"]


def test_upload_works_without_a_camera(make_app):
    app = make_app(CAMERA="none")
    client = app.test_client()
    assert upload(client, lesion_jpeg(1)).status_code == 201
    r = client.post("/api/screenings")
    assert r.status_code == 503
    assert "no camera" in r.get_json()["error"] and "upload" in r.get_json()["error"]
    assert client.get("/api/stats").get_json()["camera"]["state"] == "none"


def test_blurry_dark_and_empty_frames_are_flagged_and_ask_for_a_retake(client):
    import numpy as np

    blurry = upload(client, encode_jpeg(lesion_image(2, blur=8))).get_json()
    assert "blurry" in blurry["quality_flags"] and blurry["please_retake"]
    assert any("retake" in m for m in blurry["quality"]["messages"])
    dark = upload(client, encode_jpeg(lesion_image(2, brightness=0.15))).get_json()
    assert "too_dark" in dark["quality_flags"]
    rng = np.random.default_rng(0)
    skin = np.clip(np.full((480, 640, 3), (150, 175, 215), np.float32) + rng.normal(0, 7, (480, 640, 1)), 0, 255).astype(np.uint8)
    empty = upload(client, encode_jpeg(skin)).get_json()
    assert "no_lesion" in empty["quality_flags"]
    # the flags are kept in the record
    assert client.get(f"/api/screenings/{blurry['id']}").get_json()["quality_flags"] == blurry["quality_flags"]


@pytest.mark.parametrize(
    ("payload", "status", "words"),
    [
        (b"", 400, "empty"),
        (lesion_jpeg(0)[:400], 422, "truncated"),
        (b"%PDF-1.4 not an image at all" * 10, 422, "not a recognised image"),
    ],
    ids=["empty-file", "truncated-jpeg", "not-an-image"],
)
def test_bad_uploads_are_rejected_and_nothing_is_stored(client, app, payload, status, words):
    r = upload(client, payload)
    assert r.status_code == status
    assert words in r.get_json()["error"]
    assert client.get("/api/screenings").get_json() == {"screenings": []}
    assert stored_files(app) == []


def test_too_large_upload_is_413_json_and_nothing_is_stored(make_app, camera):
    app = make_app(CAMERA=camera, MAX_CONTENT_LENGTH=50_000)
    client = app.test_client()
    r = upload(client, lesion_jpeg(0) + b"\0" * 60_000)
    assert r.status_code == 413
    assert "too large" in r.get_json()["error"]
    assert stored_files(app) == []


def test_image_bigger_than_the_pixel_limit_is_rejected(make_app):
    client = make_app(MAX_PIXELS=100_000).test_client()
    r = upload(client, lesion_jpeg(0))
    assert r.status_code == 422 and "MP" in r.get_json()["error"]


def test_file_in_the_wrong_field_or_a_json_body_is_a_clear_400(client):
    r = client.post("/api/screenings", data={"photo": (io.BytesIO(lesion_jpeg(0)), "a.jpg")}, content_type="multipart/form-data")
    assert r.status_code == 400 and "'image' field" in r.get_json()["error"]
    r = client.post("/api/screenings", json={"image": "base64..."})
    assert r.status_code == 415 and "multipart" in r.get_json()["error"]
    r = client.post("/api/screenings", data={"operator": "x" * 500})
    assert r.status_code == 400 and "too long" in r.get_json()["error"]


def test_unknown_ids_are_404_json(client):
    for url in ("/api/screenings/01ARZ3NDEKTSV4RRFFQ69G5FAV", "/api/screenings/01ARZ3NDEKTSV4RRFFQ69G5FAV/image",
                "/api/screenings/not-an-id", "/api/screenings/../../etc/passwd"):
        r = client.get(url)
        assert r.status_code == 404, url
        assert "error" in r.get_json()
    r = client.post("/api/screenings", data={"corrects": "01ARZ3NDEKTSV4RRFFQ69G5FAV"})
    assert r.status_code == 404 and "correct" in r.get_json()["error"]


def test_correction_is_a_new_row_linked_to_the_old_one(client):
    old = upload(client, lesion_jpeg(1), lesion_ref="P-1").get_json()
    new = upload(client, lesion_jpeg(2), lesion_ref="P-2", corrects=old["id"]).get_json()
    assert new["corrects"] == old["id"] and new["id"] != old["id"]
    again = client.get(f"/api/screenings/{old['id']}").get_json()
    assert again["lesion_ref"] == "P-1" and again["corrected_by"] == [new["id"]]


def test_a_correction_is_filed_under_the_corrected_records_lesion_whatever_the_form_says(client):
    old = upload(client, lesion_jpeg(1), lesion_ref="P-0777 back").get_json()
    for typed in ("P-9999 scalp", ""):
        new = upload(client, lesion_jpeg(2), lesion_ref=typed, corrects=old["id"]).get_json()
        assert new["corrects"] == old["id"] and new["lesion_ref"] == "P-0777 back", typed
    follow_up = client.get("/api/screenings?lesion=P-0777 back").get_json()["screenings"]
    assert len(follow_up) == 3
    assert client.get("/api/screenings?lesion=P-9999 scalp").get_json() == {"screenings": []}


def test_list_pages_newest_first_and_filters_by_lesion(client):
    ids = [upload(client, lesion_jpeg(i), lesion_ref="A" if i % 2 else "B").get_json()["id"] for i in range(5)]
    listed = client.get("/api/screenings?limit=2").get_json()["screenings"]
    assert [r["id"] for r in listed] == ids[::-1][:2]
    older = client.get(f"/api/screenings?limit=10&before={listed[-1]['id']}").get_json()["screenings"]
    assert [r["id"] for r in older] == ids[::-1][2:]
    only_a = client.get("/api/screenings?lesion=A").get_json()["screenings"]
    assert {r["id"] for r in only_a} == {ids[1], ids[3]}
    for bad in ("limit=0", "limit=abc", "limit=9999", "before=nope", "before=01ARZ3NDEKTSV4RRFFQ69G5FAV"):
        r = client.get(f"/api/screenings?{bad}")
        assert r.status_code == 400, bad
        assert "error" in r.get_json()


def test_concurrent_taps_each_get_their_own_record(client, camera):
    results: list = [None] * 6
    barrier = threading.Barrier(6)

    def tap(i: int) -> None:
        barrier.wait()
        results[i] = client.post("/api/screenings", data={"operator": f"op{i}"})

    threads = [threading.Thread(target=tap, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert all(r is not None and r.status_code == 201 for r in results)
    bodies = [r.get_json() for r in results]
    assert len({b["id"] for b in bodies}) == 6
    assert sorted(b["operator"] for b in bodies) == [f"op{i}" for i in range(6)]
    assert camera.captures == 6
    assert len(client.get("/api/screenings").get_json()["screenings"]) == 6


def test_stats_report_latency_counts_camera_and_model(client):
    upload(client, lesion_jpeg(1))
    client.post("/api/screenings")
    s = client.get("/api/stats").get_json()
    assert s["latency_ms"]["total"]["count"] == 2
    assert {"count", "mean", "p50", "p90", "p99", "max"} <= s["latency_ms"]["inference"].keys()
    assert s["latency_ms"]["end_to_end"]["count"] == 2
    assert s["counts"]["total"] == 2
    assert s["camera"]["kind"] == "fake" and s["camera"]["state"] == "live"
    assert s["model"]["model_sha256"] and s["model"]["preprocessing"]["version"]
    assert s["health"]["healthy"] is True


def test_healthz_is_200_when_ready_and_503_when_the_store_is_not_writable(client, app):
    r = client.get("/healthz")
    assert r.status_code == 200 and r.get_json()["healthy"]
    store = app.extensions["dermaedge"].store
    store.is_writable = lambda: (False, "data directory /x is not writable")
    r = client.get("/healthz")
    assert r.status_code == 503
    assert "not writable" in " ".join(r.get_json()["problems"])


def test_export_csv_has_provenance_and_neutralises_formulas(client):
    rec = upload(client, lesion_jpeg(1), operator="=HYPERLINK(\"http://x\")", lesion_ref="L-9").get_json()
    r = client.get("/export.csv")
    assert r.status_code == 200 and r.mimetype == "text/csv"
    assert "attachment" in r.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(r.data.decode())))
    assert len(rows) == 1
    row = rows[0]
    assert row["id"] == rec["id"] and row["lesion_ref"] == "L-9"
    assert row["operator"].startswith("'=")
    for key in ("model_sha256", "model_version", "preprocessing_version", "image_sha256", "threshold", "app_version"):
        assert row[key], key


def test_camera_that_disappears_is_reported_and_reopened(client, app, camera):
    loop = app.extensions["dermaedge"].capture_loop
    camera.present = False
    wait_for(lambda: loop.status()["state"] == "reconnecting")
    r = client.post("/api/screenings")
    assert r.status_code == 503 and "not connected" in r.get_json()["error"]
    assert client.get("/api/stats").get_json()["camera"]["error"]
    assert upload(client, lesion_jpeg(3)).status_code == 201  # uploads keep working
    camera.present = True
    wait_for(lambda: loop.status()["state"] == "live")
    assert client.post("/api/screenings").status_code == 201
    assert loop.status()["reopens"] >= 1


def test_unexpected_errors_are_json_without_a_traceback(client, app):
    service = app.extensions["dermaedge"]
    service.store.counts = lambda: 1 / 0
    r = client.get("/api/stats")
    assert r.status_code == 500
    assert r.get_json() == {"error": "internal error; the details are in the device log"}
    assert b"Traceback" not in r.data and b"ZeroDivision" not in r.data


def test_preview_jpeg_when_live_404_without_camera_503_while_reconnecting(client, app, camera, make_app):
    wait_for(lambda: client.get("/preview.jpg").status_code == 200)
    r = client.get("/preview.jpg")
    assert r.mimetype == "image/jpeg" and r.data[:2] == b"\xff\xd8" and r.headers["Cache-Control"] == "no-store"
    camera.present = False
    wait_for(lambda: client.get("/preview.jpg").status_code == 503)
    assert "camera not ready" in client.get("/preview.jpg").get_json()["error"]
    no_camera = make_app(CAMERA="none", DATA_DIR=app.config["DATA_DIR"] + "-2").test_client()
    assert no_camera.get("/preview.jpg").status_code == 404


def test_full_queue_is_503_with_a_clear_message(client, app, monkeypatch):
    import queue

    def full(job):
        raise queue.Full

    monkeypatch.setattr(app.extensions["dermaedge"]._jobs, "put_nowait", full)
    r = upload(client, lesion_jpeg(1))
    assert r.status_code == 503 and "try again" in r.get_json()["error"]
    assert stored_files(app) == []


def test_two_posts_with_the_same_request_id_store_one_record(client, camera):
    first = client.post("/api/screenings", data={"request_id": "tap-0001-abcd", "lesion_ref": "P-1"})
    again = client.post("/api/screenings", data={"request_id": "tap-0001-abcd", "lesion_ref": "P-1"})
    assert first.status_code == 201 and again.status_code == 200
    assert again.get_json()["id"] == first.get_json()["id"] and camera.captures == 1
    assert client.get("/api/stats").get_json()["counts"]["total"] == 1
    other = upload(client, lesion_jpeg(3), request_id="tap-0002-abcd")
    assert other.status_code == 201 and other.get_json()["request_id"] == "tap-0002-abcd"
    found = client.get("/api/screenings?request_id=tap-0002-abcd").get_json()["screenings"]
    assert [r["id"] for r in found] == [other.get_json()["id"]]
    assert client.get("/api/screenings?request_id=never-sent").get_json()["screenings"] == []


def test_concurrent_posts_with_one_request_id_wait_for_the_first_and_store_one(client, app):
    results = []
    data = lesion_jpeg(4)

    def post():
        c = app.test_client()
        results.append(upload(c, data, request_id="double-tap-0001"))

    threads = [threading.Thread(target=post) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(r.status_code for r in results) == [200, 200, 200, 201]
    assert len({r.get_json()["id"] for r in results}) == 1
    assert len(stored_files(app)) == 3  # one image + its thumbnail + its screen rendition


def test_request_id_is_remembered_across_a_restart(make_app, camera, tmp_path):
    app = make_app(CAMERA="none")
    first = upload(app.test_client(), lesion_jpeg(1), request_id="before-restart-1")
    from edge_app.web import shutdown

    shutdown(app)
    again = upload(make_app(CAMERA="none").test_client(), lesion_jpeg(2), request_id="before-restart-1")
    assert first.status_code == 201 and again.status_code == 200
    assert again.get_json()["id"] == first.get_json()["id"]


def test_a_bad_request_id_is_refused_and_nothing_is_stored(client, app):
    for bad in ("short", "x" * 65, "has space in it", "semi;colon-1234"):
        r = upload(client, lesion_jpeg(1), request_id=bad)
        assert r.status_code == 400 and "request_id" in r.get_json()["error"], bad
    assert stored_files(app) == []


def test_an_upload_that_fails_the_quality_gate_is_inconclusive_in_api_csv_and_counts(client):
    dark = upload(client, encode_jpeg(lesion_image(2, brightness=0.15)))
    assert dark.status_code == 201
    rec = dark.get_json()
    assert rec["decision"] == "inconclusive" and rec["verdict"] is False and rec["please_retake"]
    assert 0.0 <= rec["malignant_probability"] <= 1.0 and rec["probabilities"]  # kept for audit
    good = upload(client, lesion_jpeg(5)).get_json()
    assert good["decision"] in ("benign", "malignant") and good["verdict"] is True
    rows = list(csv.DictReader(io.StringIO(client.get("/export.csv").data.decode())))
    assert [r["decision"] for r in rows] == ["inconclusive", good["decision"]]
    counts = client.get("/api/stats").get_json()["counts"]
    assert counts["decision_inconclusive"] == 1 and counts["no_verdict"] == 1 and counts["total"] == 2
    assert counts["decision_benign"] + counts["decision_malignant"] == 1
