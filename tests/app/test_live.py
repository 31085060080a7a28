"""What is seen is what is analysed: the frame ring, the preview stream, capture by frame id, live guidance,
and the browser's timing reports (HTTP level; the browser side is in test_live_browser.py)."""

from __future__ import annotations

import threading
from typing import Any

import cv2
import numpy as np
import pytest

from edge_app.camera import CameraError
from edge_app.camera.ring import FrameExpired, FrameRing
from edge_app.images import encode_jpeg
from tests.app.conftest import lesion_image, wait_for


class MovingCamera:
    """Every read is a new frame (a real camera); capture() would be yet another one."""

    kind = "moving"

    def __init__(self, frames: list[np.ndarray]) -> None:
        self.frames = frames
        self.reads = 0

    def open(self) -> None:
        pass

    def read(self) -> np.ndarray:
        self.reads += 1
        return self.frames[self.reads % len(self.frames)].copy()

    def capture(self) -> np.ndarray:
        return self.read()

    def close(self) -> None:
        pass

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "source": "test frames"}


def distinct_frames(n: int = 4) -> list[np.ndarray]:
    """Frames a pixel comparison tells apart at once: the same lesion, each with its own brightness band."""
    out = []
    for i in range(n):
        img = lesion_image(0, size=(480, 640)).copy()
        img[: 40, :] = 40 + 50 * i
        out.append(img)
    return out


def band(img: np.ndarray) -> float:
    return float(img[5:30, 20:-20].mean())


@pytest.fixture
def moving_app(make_app):
    app = make_app(CAMERA=MovingCamera(distinct_frames()))
    wait_for(lambda: app.extensions["dermaedge"].capture_loop.ring.last_id >= 3)
    return app


# ------------------------------------------------------------------ ring


def test_ring_ids_increase_frames_come_back_by_id_and_old_ones_expire_with_a_clear_message():
    ring = FrameRing(size=3, encode=lambda f: encode_jpeg(f))
    frames = distinct_frames(5)
    ids = [ring.push(f) for f in frames]
    assert ids == [1, 2, 3, 4, 5]
    assert ring.frame(5) is frames[4] and ring.frame(3) is frames[2]
    with pytest.raises(FrameExpired, match="too old"):
        ring.frame(2)
    with pytest.raises(FrameExpired, match="does not exist"):
        ring.frame(6)
    assert isinstance(FrameExpired("x"), CameraError)
    ring.clear()
    with pytest.raises(FrameExpired):
        ring.frame(5)
    assert ring.push(frames[0]) == 6  # ids never repeat


def test_ring_encodes_each_frame_once_for_every_viewer():
    ring = FrameRing(size=4, encode=lambda f: encode_jpeg(f, 75))
    ring.push(distinct_frames(1)[0])
    got = []
    viewers = [threading.Thread(target=lambda: got.append(ring.wait_jpeg(0, 1.0))) for _ in range(4)]
    for v in viewers:
        v.start()
    for v in viewers:
        v.join()
    assert ring.encodes == 1
    assert len({(i, j) for i, j in got}) == 1
    assert ring.wait_jpeg(1, 0.05) is None  # nothing newer than frame 1


# ------------------------------------------------------------------ stream


def read_parts(response, n: int) -> list[tuple[int, bytes]]:
    buf, parts = b"", []
    for chunk in response.response:
        buf += chunk
        while b"\r\n\r\n" in buf:
            head, rest = buf.split(b"\r\n\r\n", 1)
            fields = dict(line.split(": ", 1) for line in head.decode().split("\r\n") if ": " in line)
            length = int(fields["Content-Length"])
            if len(rest) < length + 2:
                break
            parts.append((int(fields["X-Frame-Id"]), rest[:length]))
            buf = rest[length + 2:]
        if len(parts) >= n:
            break
    response.close()
    return parts


def test_the_preview_stream_sends_kiosk_sized_jpegs_with_increasing_frame_ids(moving_app):
    client = moving_app.test_client()
    response = client.get("/api/preview/stream", buffered=False)
    assert response.status_code == 200
    assert response.mimetype == "multipart/x-mixed-replace"
    parts = read_parts(response, 4)
    ids = [i for i, _ in parts]
    assert len(parts) == 4 and ids == sorted(ids) and len(set(ids)) == 4
    frame = cv2.imdecode(np.frombuffer(parts[-1][1], np.uint8), cv2.IMREAD_COLOR)
    assert frame.shape[1] <= 800 and frame.shape[0] <= 480


def test_at_most_two_preview_streams_hold_server_threads(moving_app):
    client = moving_app.test_client()
    first, second = (client.get("/api/preview/stream", buffered=False) for _ in range(2))
    third = client.get("/api/preview/stream", buffered=False)
    assert (first.status_code, second.status_code, third.status_code) == (200, 200, 503)
    assert "already open on 2 screens" in third.get_json()["error"]
    first.close()
    again = client.get("/api/preview/stream", buffered=False)
    assert again.status_code == 200 and read_parts(again, 1)
    second.close()


def test_no_preview_stream_or_guidance_in_upload_only_mode(make_app):
    client = make_app(CAMERA="none").test_client()
    for url in ("/api/preview/stream", "/api/preview/guidance"):
        r = client.get(url)
        assert r.status_code == 404 and "upload" in r.get_json()["error"]


# ------------------------------------------------------------------ capture by frame id


def test_capture_analyses_exactly_the_frame_with_the_id_sent(moving_app):
    client = moving_app.test_client()
    ring = moving_app.extensions["dermaedge"].capture_loop.ring
    frame_id = ring.last_id - 1  # not the newest: the one a lagging screen still shows
    wanted = ring.frame(frame_id)
    r = client.post("/api/screenings", data={"frame_id": str(frame_id)})
    assert r.status_code == 201, r.get_json()
    stored = cv2.imdecode(np.frombuffer(client.get(r.get_json()["image_url"]).data, np.uint8), cv2.IMREAD_COLOR)
    assert abs(band(stored) - band(wanted)) < 3
    others = [f for f in distinct_frames() if abs(band(f) - band(wanted)) > 1]
    assert all(abs(band(stored) - band(f)) > 20 for f in others)


def test_an_expired_or_unknown_frame_id_is_refused_clearly_and_nothing_is_stored(moving_app):
    client = moving_app.test_client()
    store = moving_app.extensions["dermaedge"].store
    ring = moving_app.extensions["dermaedge"].capture_loop.ring
    wait_for(lambda: ring.last_id > ring.size + 1)
    before = store.counts()["total"]
    for frame_id, words in (("1", "too old"), ("999999", "does not exist")):
        r = client.post("/api/screenings", data={"frame_id": frame_id})
        assert r.status_code == 410
        assert words in r.get_json()["error"] and "capture again" in r.get_json()["error"]
    for bad in ("abc", "-3", "1.5"):
        r = client.post("/api/screenings", data={"frame_id": bad})
        assert r.status_code == 400 and "frame_id" in r.get_json()["error"]
    r = client.post("/api/screenings",
                    data={"frame_id": "5", "image": (__import__("io").BytesIO(encode_jpeg(lesion_image(1))), "a.jpg")})
    assert r.status_code == 400 and "not with an uploaded image" in r.get_json()["error"]
    assert store.counts()["total"] == before


# ------------------------------------------------------------------ guidance


def test_guidance_says_what_a_capture_of_that_frame_would_be_told(make_app):
    dark = lesion_image(3, brightness=0.15)
    app = make_app(CAMERA=MovingCamera([dark, dark]))
    wait_for(lambda: app.extensions["dermaedge"].capture_loop.ring.last_id >= 2)
    client = app.test_client()
    g = client.get("/api/preview/guidance").get_json()
    assert "too_dark" in g["flags"] and "too dark" in g["text"] and g["ok"] is False
    r = client.post("/api/screenings", data={"frame_id": str(g["frame_id"])}).get_json()
    assert r["quality"]["flags"] == [f for f in g["flags"] if f != "out_of_scope"]
    assert r["decision"] == "inconclusive"


def test_guidance_on_a_good_frame_matches_the_capture_decision_and_is_rate_limited(moving_app):
    client = moving_app.test_client()
    first = client.get("/api/preview/guidance").get_json()
    again = client.get("/api/preview/guidance").get_json()
    assert again["frame_id"] == first["frame_id"] and again["checks"] == first["checks"]  # kept for ~0.5 s
    record = client.post("/api/screenings", data={"frame_id": str(first["frame_id"])}).get_json()
    assert ("out_of_scope" in first["flags"]) == (record["decision"] == "out_of_scope")
    assert [f for f in first["flags"] if f != "out_of_scope"] == record["quality"]["flags"]
    if first["ok"]:
        assert first["text"] == "looks good: tap Capture"


# ------------------------------------------------------------------ browser timings


def test_browser_timings_are_stored_and_shown_on_the_performance_page(moving_app):
    client = moving_app.test_client()
    rec = client.post("/api/screenings").get_json()
    r = client.post("/api/timings", json={"record_id": rec["id"], "kind": "capture", "tap_to_verdict": 140.0,
                                          "tap_to_image": 171.5})
    assert r.status_code == 201
    page = client.get("/performance").get_data(as_text=True)
    assert 'data-kind="capture" data-key="tap_to_image"' in page and "171.5" in page
    for body, status in (({"record_id": rec["id"], "kind": "fax", "tap_to_verdict": 1}, 400),
                         ({"record_id": "01ABCDEFGHJKMNPQRSTVWXYZ12", "kind": "upload", "tap_to_verdict": 1}, 404),
                         ({"record_id": rec["id"], "kind": "upload", "tap_to_verdict": -5}, 400),
                         ({"record_id": rec["id"], "kind": "upload"}, 400)):
        assert moving_app.test_client().post("/api/timings", json=body).status_code == status, body
    assert moving_app.test_client().post("/api/timings", data="x").status_code == 400
