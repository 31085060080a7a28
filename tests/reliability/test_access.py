"""Issue 7 (5): access. Loopback by default; a token for every route but /healthz when exposed;
CSRF on browser posts; security headers; no stack traces; no client file names; unguessable ids."""

from __future__ import annotations

import hmac
import re
from pathlib import Path

import pytest

from edge_app.cli import main as cli
from edge_app.config import load_settings
from edge_app.store import is_record_id
from tests.app.conftest import model_path
from tests.reliability.helpers import lesion_jpeg, snapshot, upload

TOKEN = "clinic-lan-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
OPEN = {"api.healthz", "access.login", "static"}
TEMPLATES = Path(__file__).resolve().parents[2] / "edge_app" / "web" / "templates"


def test_loopback_is_the_default_bind_address(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("EDGE_APP_HOST", raising=False)
    settings = load_settings(env={}, overrides={"model": str(model_path())})
    assert settings.host == "127.0.0.1" and settings.is_loopback
    import waitress

    bound = {}

    def create_server(app, host, port, **kw):
        bound["host"] = host
        raise OSError(98, "stop here")

    monkeypatch.setattr(waitress, "create_server", create_server)
    cli(["serve", "--model", str(model_path()), "--camera", "none", "--data-dir", str(tmp_path)])
    assert bound["host"] == "127.0.0.1"


def _urls(app, record_id: str) -> list[tuple[str, str, str]]:
    """(method, url, endpoint) for every route of the app, with real values in the placeholders."""
    values = {"record_id": record_id, "lesion_ref": "P-1", "filename": "app.css"}
    out = []
    with app.test_request_context():
        for rule in app.url_map.iter_rules():
            url = rule.build({k: values[k] for k in rule.arguments})[1]
            for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
                out.append((method, url, rule.endpoint))
    return out


@pytest.fixture
def lan_app(make_app, camera):
    app = make_app(CAMERA=camera, ACCESS_TOKEN=TOKEN)
    rec = upload(app.test_client(), lesion_jpeg(1), lesion_ref="P-1", headers=AUTH).get_json()
    return app, rec


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {TOKEN[:-1]}"},
                                     {"Authorization": f"Bearer {TOKEN}x"}, {"Authorization": f"Basic {TOKEN}"},
                                     {"X-Access-Token": TOKEN}, {"Cookie": "session=forged"}],
                         ids=["none", "wrong", "prefix", "longer", "basic-scheme", "other-header", "forged-cookie"])
def test_every_route_but_healthz_and_login_needs_the_token(lan_app, headers):
    app, rec = lan_app
    client = app.test_client()
    before = snapshot(app)
    checked = 0
    for method, url, endpoint in _urls(app, rec["id"]):
        if endpoint in OPEN:
            continue
        r = client.open(url, method=method, headers=headers)
        assert r.status_code in (401, 302), (method, url, r.status_code)
        assert b"\xff\xd8" not in r.data[:4] and rec["image_sha256"].encode() not in r.data, url
        if r.status_code == 302:
            assert "/login" in r.headers["Location"]
        checked += 1
    assert checked >= 10
    assert snapshot(app) == before
    assert client.get("/healthz").status_code == 200


def test_healthz_tells_a_lan_visitor_only_up_or_down(lan_app):
    app, _ = lan_app
    client = app.test_client()
    anonymous = client.get("/healthz")
    assert anonymous.status_code == 200 and anonymous.get_json() == {"healthy": True}
    detailed = client.get("/healthz", headers=AUTH).get_json()
    assert detailed["healthy"] and "store_writable" in detailed and "worker_alive" in detailed


def test_patient_images_are_never_served_without_the_token(lan_app):
    app, rec = lan_app
    client = app.test_client()
    for url in (rec["image_url"], rec["thumbnail_url"], f"/api/screenings/{rec['id']}", "/export.csv",
                f"/screenings/{rec['id']}", "/lesions/P-1", "/history"):
        for accept in ("application/json", "text/html", "image/*"):
            r = client.get(url, headers={"Accept": accept})
            assert r.status_code in (401, 302) and not r.data.startswith(b"\xff\xd8"), (url, accept)
    r = client.get(rec["image_url"], headers=AUTH)
    assert r.status_code == 200 and r.data.startswith(b"\xff\xd8")


def test_the_token_is_compared_in_constant_time(lan_app, monkeypatch):
    app, _ = lan_app
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    client = app.test_client()
    assert client.get("/api/stats", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert (b"nope", TOKEN.encode()) in calls
    calls.clear()
    assert client.post("/login", data={"token": "guess"}).status_code == 401
    assert (b"guess", TOKEN.encode()) in calls
    source = (Path(__file__).resolve().parents[2] / "edge_app" / "web" / "access.py").read_text()
    assert not re.search(r"==\s*_token\(\)|_token\(\)\s*==", source)  # no plain comparison anywhere


def test_every_state_changing_route_refuses_a_browser_without_the_csrf_token(lan_app):
    app, rec = lan_app
    client = app.test_client()
    assert client.post("/login", data={"token": TOKEN}).status_code == 302  # a signed-in browser session
    before = snapshot(app)
    posts = [(m, u) for m, u, e in _urls(app, rec["id"]) if m not in ("GET",) and e != "access.login"]
    assert posts
    for method, url in posts:
        for headers in ({}, {"X-CSRF-Token": "forged"}, {"Origin": "http://evil.example"}):
            r = client.open(url, method=method, headers=headers, data={"operator": "x"})
            assert r.status_code == 403 and "CSRF" in r.get_json()["error"], (url, headers)
    assert snapshot(app) == before


def test_a_cross_site_post_is_refused_even_on_loopback_without_a_token(client, app):
    before = snapshot(app)
    for headers in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
        r = upload(client, lesion_jpeg(1), headers=headers)
        assert r.status_code == 403
    assert snapshot(app) == before


def test_security_headers_on_every_kind_of_response(lan_app):
    app, rec = lan_app
    client = app.test_client()
    responses = {
        "image": client.get(rec["image_url"], headers=AUTH),
        "thumbnail": client.get(rec["thumbnail_url"], headers=AUTH),
        "page": client.get("/", headers=AUTH),
        "401": client.get("/api/stats"),
        "login": client.get("/login"),
        "404": client.get("/api/screenings/01ARZ3NDEKTSV4RRFFQ69G5FAV", headers=AUTH),
        "405": client.delete(f"/api/screenings/{rec['id']}", headers=AUTH),
        "healthz": client.get("/healthz"),
    }
    for name, r in responses.items():
        h = r.headers
        csp = h["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp, name
        assert "frame-ancestors 'none'" in csp and "object-src 'none'" in csp, name
        assert h["X-Content-Type-Options"] == "nosniff", name
        assert h["Referrer-Policy"] == "no-referrer", name
        assert h["Cache-Control"] == "no-store", name


def test_templates_have_no_inline_script_or_event_handlers():
    for template in TEMPLATES.glob("*.html"):
        html = template.read_text()
        for tag in re.findall(r"<script\b[^>]*>", html):
            assert "src=" in tag, (template.name, tag)
        assert not re.search(r"<script\b[^>]*>\s*[^<\s]", html), template.name
        assert not re.search(r"\son[a-z]+\s*=", html), template.name
        assert "javascript:" not in html, template.name


def test_no_stack_trace_in_any_error_response(client, app, monkeypatch):
    store = app.extensions["dermaedge"].store

    def boom(*a, **k):
        raise KeyError("secret_column_name")

    monkeypatch.setattr(store, "lesions", boom)
    monkeypatch.setattr(store, "counts", boom)
    responses = [  # a cookie-less API client first (a browser session would meet the CSRF check first)
        client.put("/api/screenings"),  # 405
        client.post("/api/screenings", data=b"x" * 100, content_type="application/xml"),  # 415
        client.get("/api/screenings?limit=zzz"),  # 400
        client.get("/nope"), client.get("/api/nope"),  # 404
        client.get("/api/stats"),  # JSON 500
        client.get("/history"),  # HTML 500
    ]
    assert [r.status_code for r in responses] == [405, 415, 400, 404, 404, 500, 500]
    for r in responses:
        body = r.data.decode()
        for leak in ("Traceback", "secret_column_name", "KeyError", 'File "', "werkzeug", "/work/"):
            assert leak not in body, (r.status_code, leak)


def test_file_names_from_the_client_are_never_used(client, app, tmp_path):
    data = Path(app.config["DATA_DIR"])
    for name in ("../../etc/x.jpg", "/etc/passwd", "..\\..\\x.jpg", "a/../../../x.jpg", "x.jpg\x00.png", "....//x.jpg"):
        rec = upload(client, lesion_jpeg(1), name=name).get_json()
        assert re.fullmatch(r"images/\d{4}-\d{2}-\d{2}/[0-9A-Z]{26}\.jpg", rec["image_path"]), rec["image_path"]
        assert rec["image_path"].endswith(rec["id"] + ".jpg")
        assert "x.jpg" not in str(rec) and "passwd" not in str(rec)
    written = [p for p in tmp_path.rglob("*") if p.is_file() and data not in p.parents]
    assert written == []  # nothing outside the data directory
    assert not Path("/etc/x.jpg").exists()


@pytest.mark.parametrize("url", [
    "/api/screenings/..%2F..%2Fetc/image", "/api/screenings/..%2F..%2Fetc%2Fpasswd/image",
    "/api/screenings/%2e%2e%2f%2e%2e%2fscreenings.sqlite3/image", "/api/screenings/../../screenings.sqlite3",
    "/api/screenings/..%5C..%5Cetc/image", "/static/..%2F..%2Fstore.py", "/static/../../store.py",
    "/lesions/..%2F..%2Fetc%2Fpasswd",
])
def test_path_traversal_in_urls_serves_nothing(client, url):
    upload(client, lesion_jpeg(1))
    r = client.get(url)
    assert r.status_code == 404, (url, r.status_code)
    assert b"root:" not in r.data and b"SQLite format" not in r.data and b"import" not in r.data


def test_record_ids_in_urls_are_not_sequential_or_guessable(client):
    ids = [upload(client, lesion_jpeg(i)).get_json()["id"] for i in range(6)]
    assert all(is_record_id(i) and not i.isdigit() for i in ids)
    suffixes = [i[10:] for i in ids]
    assert len(set(suffixes)) == 6  # 80 random bits after the time prefix
    listed = client.get("/api/screenings").get_json()["screenings"]
    assert all("seq" not in r for r in listed)  # the internal row number is never exposed
    neighbour = ids[0][:-1] + ("0" if ids[0][-1] != "0" else "1")
    assert client.get(f"/api/screenings/{neighbour}").status_code == 404
