"""Issue 19 on the server-rendered pages: no probability of a no-verdict screening where a technician looks,
follow-up x labels that tell screenings apart, a correction's screen showing the corrected lesion, the camera
state in words, the model card rendered from Markdown, and plain image error messages."""

from __future__ import annotations

import io
import re

from edge_app.images import encode_jpeg
from edge_app.web.camera_view import camera_view
from edge_app.web.model_info import card_html
from tests.app.conftest import lesion_image, lesion_jpeg


def post(client, data: bytes, **fields):
    return client.post("/api/screenings", data={"image": (io.BytesIO(data), "l.jpg"), **fields},
                       content_type="multipart/form-data")


def test_a_no_verdict_probability_is_on_no_page_but_kept_in_the_api(client):
    dark = post(client, encode_jpeg(lesion_image(2, brightness=0.15)), lesion_ref="P-NV").get_json()
    assert dark["decision"] == "inconclusive" and "malignant_probability" in dark  # audit
    good = post(client, lesion_jpeg(1), lesion_ref="P-NV").get_json()
    hidden = dark["probability_text"]
    assert hidden != good["probability_text"]
    for url in (f"/screenings/{dark['id']}", "/lesions/P-NV", "/history"):
        html = client.get(url).data.decode()
        assert hidden not in html, url
        assert "audit" not in html.lower(), url
    follow_up = client.get("/lesions/P-NV").data.decode()
    assert "<title>" not in follow_up.split("<main", 1)[1]  # nothing only in a hover tooltip
    assert follow_up.count('class="trend-none"') == 2  # the wide and the phone chart: a "?" on the no-result row
    assert good["probability_text"] in follow_up  # a verdict's value is written on the chart and in the strip


def test_follow_up_x_labels_tell_screenings_of_one_minute_apart(client):
    for seed in range(3):
        post(client, lesion_jpeg(seed), lesion_ref="P-X")
    wide_chart = client.get("/lesions/P-X").data.decode().split('class="trend-chart trend-wide"')[1].split("</svg>")[0]
    labels = re.findall(r'text-anchor="middle" font-size="12" fill="#5b6b7b">([^<]+)</text>', wide_chart)
    assert labels and len(set(labels)) == len(labels), labels  # never "02:46" under every point
    assert all(re.fullmatch(r"\d\d:\d\d(:\d\d)?|\d{1,2} \w{3}", label) for label in labels), labels


def test_the_correction_screen_shows_the_corrected_lesion_locked(client):
    old = post(client, lesion_jpeg(1), lesion_ref="P-0777 back").get_json()
    html = client.get(f"/?corrects={old['id']}").data.decode()
    field = re.search(r'<input id="lesion_ref"[^>]*>', html).group(0)
    assert 'value="P-0777 back"' in field and "readonly" in field
    assert re.search(r'id="correcting".*?P-0777 back', html, re.DOTALL)
    plain = client.get("/").data.decode()
    assert "readonly" not in re.search(r'<input id="lesion_ref"[^>]*>', plain).group(0)


def test_camera_state_in_words_with_the_reason_visible():
    lost = camera_view({"state": "reconnecting", "error": "camera folder /x does not exist", "retry_in_s": 3.2})
    assert lost["short"] == "Camera lost" and "Upload" in lost["help"] and "does not exist" in lost["reason"]
    assert camera_view({"state": "live"})["words"] == "Camera live" and camera_view({"state": "live"})["help"] is None
    assert "upload only" in camera_view({"state": "none"})["words"]
    assert camera_view({"state": "reconnecting", "error": None})["short"] == "Connecting"


def test_the_model_card_is_rendered_and_raw_html_in_it_is_escaped():
    html = str(card_html("# Card\n\nSee [Reproduce](#reproduce).\n\n| a | b |\n| --- | --- |\n| 1 | 2 |\n\n"
                         "## Reproduce\n\n<script>alert(1)</script>\n"))
    assert '<h2 id="reproduce">' in html and '<a href="#reproduce">' in html
    assert '<div class="table-wrap"><table>' in html and "<td>1</td>" in html
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_image_errors_are_in_plain_words_and_name_the_accepted_formats(client):
    cases = {lesion_jpeg(0)[:1500]: "damaged or incomplete", b"%PDF-1.4 not an image" * 10: "JPEG, PNG, WebP, BMP, TIFF"}
    for data, words in cases.items():
        r = post(client, data)
        assert r.status_code == 422 and words in r.get_json()["error"], r.get_json()
        assert "bytes not processed" not in r.get_json()["error"]
