"""The touchscreen pages, security headers, CSRF and the access token."""

from __future__ import annotations

import io
import re

from tests.app.conftest import lesion_jpeg


def upload(client, seed: int, headers=None, **fields):
    return client.post("/api/screenings", data={"image": (io.BytesIO(lesion_jpeg(seed)), "l.jpg"), **fields},
                       content_type="multipart/form-data", headers=headers or {})


def csrf_from(html: str) -> str:
    return re.search(r'name="csrf-token" content="([^"]+)"', html).group(1)


def test_main_screen_has_capture_upload_fields_result_latency_and_versions(client):
    r = client.get("/")
    html = r.data.decode()
    assert r.status_code == 200
    for needle in ('id="capture"', 'id="upload"', 'id="operator"', 'id="lesion_ref"', 'id="latency-line"', 'id="shot"',
                   "Screening aid, not a diagnosis", "prep. v", 'id="camera-text"'):
        assert needle in html, needle
    assert "<script>" not in html and "onclick" not in html and 'style="' not in html  # CSP without 'unsafe-inline'


def test_history_shows_thumbnails_and_links_to_follow_up(client):
    upload(client, 1, lesion_ref="P-3")
    upload(client, 2, lesion_ref="P-3")
    upload(client, 3)
    html = client.get("/history").data.decode()
    assert html.count('class="thumb"') == 3
    assert "/lesions/P-3" in html
    assert client.get("/history?lesion=P-3").data.decode().count('class="thumb"') == 2


def test_follow_up_shows_screenings_oldest_first_with_a_trend(client):
    ids = [upload(client, i, lesion_ref="P 9/back").get_json()["id"] for i in range(3)]
    upload(client, 7, lesion_ref="other")
    r = client.get("/lesions/P 9/back")
    html = r.data.decode()
    assert r.status_code == 200
    positions = [html.index(f"/screenings/{i}") for i in ids]
    assert positions == sorted(positions)
    assert "<polyline" in html and "threshold" in html and html.count("<img") == 3
    assert client.get("/lesions/nobody").status_code == 404


def test_screening_detail_page(client):
    rec = upload(client, 1, lesion_ref="P-1", operator="Chen").get_json()
    html = client.get(f"/screenings/{rec['id']}").data.decode()
    assert rec["image_sha256"][:16] in html and "Chen" in html and "/lesions/P-1" in html


def test_free_text_is_escaped(client):
    upload(client, 1, lesion_ref="<script>alert(1)</script>")
    html = client.get("/history").data.decode()
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;" in html


def test_security_headers_and_no_store(client):
    rec = upload(client, 1).get_json()
    for url in ("/", "/api/stats", rec["image_url"], f"/api/screenings/{rec['id']}", "/export.csv"):
        h = client.get(url).headers
        assert "'unsafe-inline'" not in h["Content-Security-Policy"] and "script-src 'self'" in h["Content-Security-Policy"]
        assert h["X-Content-Type-Options"] == "nosniff"
        assert h["Referrer-Policy"] == "no-referrer"
        assert h["Cache-Control"] == "no-store", url


def test_static_assets_are_served_locally(client):
    html = client.get("/").data.decode()
    assert "http://" not in html and "https://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    for asset in ("app.css", "app.js"):
        assert client.get(f"/static/{asset}").status_code == 200


def test_browser_post_without_csrf_token_is_refused_and_with_it_accepted(client):
    html = client.get("/").data.decode()  # opens the session (cookie)
    r = upload(client, 1, headers={"Origin": "http://evil.example"})
    assert r.status_code == 403 and "CSRF" in r.get_json()["error"]
    r = upload(client, 1)  # has the session cookie but no token
    assert r.status_code == 403
    r = upload(client, 1, headers={"X-CSRF-Token": csrf_from(html)})
    assert r.status_code == 201


TOKEN = "s3cret-token-of-some-length"


def test_access_token_guards_every_route_but_healthz(make_app, camera):
    client = make_app(CAMERA=camera, ACCESS_TOKEN=TOKEN).test_client()
    assert client.get("/healthz").status_code == 200
    for url in ("/api/stats", "/api/screenings", "/export.csv", "/preview.jpg"):
        r = client.get(url)
        assert r.status_code == 401, url
        assert "token" in r.get_json()["error"]
    assert client.get("/").status_code == 302
    assert client.get("/api/stats", headers={"Authorization": "Bearer wrong"}).status_code == 401
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert client.get("/api/stats", headers=auth).status_code == 200
    assert upload(client, 1, headers=auth).status_code == 201  # API clients with the token need no CSRF token
    assert upload(client, 1).status_code == 401


def test_login_with_the_token_opens_a_browser_session(make_app, camera):
    client = make_app(CAMERA=camera, ACCESS_TOKEN=TOKEN).test_client()
    r = client.post("/login", data={"token": "nope"})
    assert r.status_code == 401
    r = client.post("/login?next=/history", data={"token": TOKEN})
    assert r.status_code == 302 and r.headers["Location"].endswith("/history")
    html = client.get("/").data.decode()
    assert client.get("/api/stats").status_code == 200
    assert upload(client, 1).status_code == 403  # a browser session still needs the CSRF token
    assert upload(client, 1, headers={"X-CSRF-Token": csrf_from(html)}).status_code == 201
    assert client.post("/login?next=//evil.example", data={"token": TOKEN}).headers["Location"] == "/"


def test_retake_as_correction_from_the_detail_page(client):
    old = upload(client, 1, lesion_ref="P-5").get_json()
    assert f"/?corrects={old['id']}" in client.get(f"/screenings/{old['id']}").data.decode()
    html = client.get(f"/?corrects={old['id']}").data.decode()
    assert f'data-corrects="{old["id"]}"' in html and "Correcting" in html
    assert 'data-corrects=""' in client.get("/?corrects=01ARZ3NDEKTSV4RRFFQ69G5FAV").data.decode()


def test_performance_page_shows_this_screening_rolling_percentiles_and_a_latency_plot(client):
    ids = [upload(client, i).get_json()["id"] for i in range(3)]
    html = client.get("/performance").data.decode()
    assert 'id="latency"' in html and "p90" in html and "p99" in html
    assert 'class="latency-chart"' in html and "last 3 of up to" in html
    row = re.search(r'<tr data-stage="inference".*?</tr>', html, re.DOTALL).group(0)
    assert "–" not in row  # this screening, p50, p90, p99 all filled
    assert client.get(f"/performance?id={ids[0]}").status_code == 200
    assert client.get("/performance?id=nope").status_code == 404


def test_recent_lesion_references_can_be_picked_on_the_screen(client):
    upload(client, 1, lesion_ref="P-77 back")
    html = client.get("/").data.decode()
    assert 'data-ref="P-77 back"' in html


def test_inconclusive_screenings_read_as_no_result_everywhere(client):
    from edge_app.images import encode_jpeg
    from tests.app.conftest import lesion_image

    dark = client.post("/api/screenings", data={"image": (io.BytesIO(encode_jpeg(lesion_image(2, brightness=0.15))), "d.jpg"),
                                                "lesion_ref": "P-D"}, content_type="multipart/form-data").get_json()
    assert dark["decision"] == "inconclusive"
    upload(client, 1, lesion_ref="P-D")
    for url in ("/history", "/lesions/P-D", f"/screenings/{dark['id']}"):
        html = client.get(url).data.decode()
        assert "No result: retake" in html, url
    detail = client.get(f"/screenings/{dark['id']}").data.decode()
    assert "Low suspicion" not in detail and "Suspicious" not in detail and "badge-none" in detail
