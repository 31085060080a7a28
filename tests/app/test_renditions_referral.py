"""Screen renditions (made once, originals byte-identical, every accepted format displays) and the referral sheet PDF."""

from __future__ import annotations

import hashlib
import io

import cv2
import numpy as np
import pytest
from PIL import Image

from edge_app import renditions
from edge_app.store.maintenance import purge, recover
from tests.app.conftest import lesion_image, lesion_jpeg


def upload(client, data: bytes, name: str = "photo.jpg", **fields):
    r = client.post("/api/screenings", data={"image": (io.BytesIO(data), name)} | fields)
    assert r.status_code == 201, r.get_json()
    return r.get_json()


def rendition_file(app, rec):
    store = app.extensions["dermaedge"].store
    return renditions.rendition_path(store.data_dir / store.get(rec["id"]).image_path)


def test_a_big_upload_gets_one_screen_rendition_and_its_original_stays_byte_identical(app, client):
    big = cv2.resize(lesion_image(0), (2400, 1800), interpolation=cv2.INTER_CUBIC)
    data = cv2.imencode(".jpg", big, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    rec = upload(client, data)
    path = rendition_file(app, rec)
    assert path.is_file()  # made when the record was saved, before the reply: not on view
    made = path.stat()
    shown = client.get(rec["screen_url"])
    assert shown.status_code == 200 and shown.mimetype == "image/jpeg"
    w, h = Image.open(io.BytesIO(shown.data)).size
    assert max(w, h) <= renditions.SCREEN_SIDE and min(w, h) >= 256 and abs(w / h - 4 / 3) < 0.01
    client.get(rec["screen_url"])
    assert path.stat().st_mtime_ns == made.st_mtime_ns and path.stat().st_ino == made.st_ino  # made once
    original = client.get(rec["image_url"])
    assert original.data == data and hashlib.sha256(original.data).hexdigest() == rec["image_sha256"]


@pytest.mark.parametrize("fmt,ext,mode", [("TIFF", "tif", "RGB"), ("BMP", "bmp", "RGB"), ("PNG", "png", "I;16")])
def test_every_accepted_format_displays_as_a_jpeg_rendition(client, fmt, ext, mode):
    rgb = lesion_image(2)[..., ::-1]
    img = Image.fromarray(rgb) if mode == "RGB" else Image.fromarray(rgb[..., 0].astype(np.uint16) * 257)
    buf = io.BytesIO()
    img.save(buf, fmt)
    rec = upload(client, buf.getvalue(), f"lesion.{ext}")
    shown = client.get(rec["screen_url"])
    assert shown.status_code == 200 and shown.mimetype == "image/jpeg"
    assert Image.open(io.BytesIO(shown.data)).format == "JPEG"
    assert client.get(rec["image_url"]).data == buf.getvalue()  # the original, as uploaded


def test_a_record_without_a_rendition_gets_it_on_first_view_and_recovery_keeps_it(app, client):
    rec = upload(client, lesion_jpeg(1))
    path = rendition_file(app, rec)
    assert path.is_file()
    path.unlink()  # as for a record saved before renditions existed
    assert client.get(rec["screen_url"]).status_code == 200 and path.is_file()
    store = app.extensions["dermaedge"].store
    orphan = path.with_name("01ZZZZZZZZZZZZZZZZZZZZZZZZ.screen.jpg")
    orphan.write_bytes(path.read_bytes())
    recover(store, store.owner)  # what the serving app does at start
    assert path.is_file() and not orphan.exists()
    purge(store, everything=True)
    assert not path.exists()


def test_a_camera_capture_is_shown_from_its_rendition_made_from_the_frame(app, client):
    rec = client.post("/api/screenings").get_json()
    path = rendition_file(app, rec)
    assert path.is_file()
    shown = Image.open(io.BytesIO(client.get(rec["screen_url"]).data))
    assert shown.size == (rec["image_width"], rec["image_height"])  # 640x480 frames fit as they are


def test_the_details_page_shows_the_rendition_and_links_the_original_and_the_referral_sheet(client):
    rec = upload(client, lesion_jpeg(3), lesion_ref="P-0777 back")
    page = client.get(rec["detail_url"]).get_data(as_text=True)
    assert f'src="{rec["screen_url"]}"' in page.replace("&amp;", "&")
    assert f'href="{rec["image_url"]}"' in page
    assert f'/screenings/{rec["id"]}/referral.pdf' in page
    follow = client.get(rec["follow_up_url"]).get_data(as_text=True)
    assert "/referral.pdf?lesion=P-0777" in follow


# ------------------------------------------------------------------ referral sheet


def pdf_text(data: bytes) -> tuple[int, str]:
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(data))
    return len(reader.pages), "\n".join(p.extract_text() for p in reader.pages)


def test_the_referral_sheet_is_one_a4_page_naming_the_record_model_and_earlier_screenings(app, client):
    earlier = [upload(client, lesion_jpeg(i), lesion_ref="P-0142 forearm", operator="Asha") for i in (4, 5)]
    rec = upload(client, lesion_jpeg(6), lesion_ref="P-0142 forearm", operator="Asha")
    r = client.get(f"/screenings/{rec['id']}/referral.pdf")
    assert r.status_code == 200 and r.mimetype == "application/pdf"
    assert r.data.startswith(b"%PDF")
    from pypdf import PdfReader

    page = PdfReader(io.BytesIO(r.data)).pages[0]
    assert [round(float(v)) for v in page.mediabox[2:]] == [595, 842]  # A4 in points
    pages, text = pdf_text(r.data)
    assert pages == 1
    for needed in (rec["id"], rec["model_sha256"], rec["model_version"], "P-0142 forearm", "Asha",
                   f"version {rec['preprocessing_version']}", "Screening aid, not a diagnosis", rec["decision_label"]):
        assert needed in text, needed
    for e in earlier:
        assert e["id"] in text
    if rec["verdict"]:
        assert f"{rec['malignant_probability'] * 100:.1f}%" in text and f"{rec['threshold'] * 100:.1f}%" in text
    lesion = client.get("/referral.pdf?lesion=P-0142 forearm")
    assert lesion.status_code == 200 and rec["id"] in pdf_text(lesion.data)[1]
    assert client.get("/referral.pdf?lesion=nobody").status_code == 404
    assert client.get("/screenings/01ZZZZZZZZZZZZZZZZZZZZZZZZ/referral.pdf").status_code == 404


def test_a_no_verdict_referral_sheet_shows_the_reason_and_no_probability(client):
    dark = cv2.imencode(".jpg", lesion_image(4, brightness=0.15, blur=6))[1].tobytes()
    rec = upload(client, dark)
    assert rec["decision"] == "inconclusive"
    _, text = pdf_text(client.get(f"/screenings/{rec['id']}/referral.pdf").data)
    assert "No verdict" in text and "too dark" in text
    assert "Malignant probability" not in text and rec["probability_text"] not in text
