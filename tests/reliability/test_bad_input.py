"""Issue 7 (1): bad input to POST /api/screenings and `edge-app classify`.

Every bad file gets a 4xx JSON error with a message, the store is unchanged
(row count and files on disk), and the server keeps serving. Cases already
pinned in tests/app/test_api.py (0-byte, truncated JPEG, PDF bytes, a JSON body,
a small-limit 413, the pixel limit) are not repeated one by one; here they run
back to back with the new ones, and the store and the server are checked after each.
"""

from __future__ import annotations

import hashlib
import io
import json

import numpy as np
import pytest
from PIL import Image

from edge_app.cli import main as cli
from edge_app.decisions import NO_VERDICT
from tests.reliability.helpers import assert_still_serving, jpeg_with_orientation, lesion_jpeg, png, snapshot, upload

BOMB_PNG = png(Image.new("1", (30000, 30000)))  # ~100 KB file declaring 900 MP
OVER_LIMIT_PNG = png(Image.new("1", (9000, 7000)))  # 63 MP: over the 50 MP limit, under Pillow's own bomb guard
SIXTY_MB = lesion_jpeg(0) + b"\0" * (60 * 1024 * 1024)

BAD_UPLOADS = [
    # (id, how to send it, status, words in the message)
    ("zero-bytes", {"file": b""}, 400, "empty"),
    ("truncated-jpeg", {"file": lesion_jpeg(0)[:1500]}, 422, "truncated"),
    ("decompression-bomb-png", {"file": BOMB_PNG}, 422, "decompression bomb"),
    ("over-pixel-limit-png", {"file": OVER_LIMIT_PNG}, 422, "MP limit"),
    ("non-image-bytes", {"file": b"MZ\x90\x00 this is an executable, not a photo" * 50}, 422, "not a recognised image"),
    ("html-named-jpg", {"file": b"<html><script>alert(1)</script></html>", "name": "photo.jpg"}, 422, "not a recognised image"),
    ("jpeg-header-then-garbage", {"file": b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8}, 422, "cannot screen"),
    ("raw-jpeg-body-octet-stream", {"raw": lesion_jpeg(0), "type": "application/octet-stream"}, 415, "multipart"),
    ("raw-jpeg-body-image-jpeg", {"raw": lesion_jpeg(0), "type": "image/jpeg"}, 415, "multipart"),
    ("text-plain-body", {"raw": b"hello", "type": "text/plain"}, 415, "multipart"),
    ("sixty-mb-upload", {"file": SIXTY_MB}, 413, "limit is 20 MB"),
    ("too-small-to-screen", {"file": png(Image.new("RGB", (4, 4), (120, 90, 60)))}, 422, "cannot screen"),
]


def send(client, case: dict):
    if "raw" in case:
        return client.post("/api/screenings", data=case["raw"], content_type=case["type"])
    return upload(client, case["file"], name=case.get("name", "lesion.jpg"))


@pytest.mark.parametrize(("case", "status", "words"), [c[1:] for c in BAD_UPLOADS], ids=[c[0] for c in BAD_UPLOADS])
def test_bad_upload_is_a_4xx_json_message_and_the_store_is_unchanged(make_app, camera, case, status, words):
    app = make_app(CAMERA=camera)  # the default 20 MB upload limit and 50 MP pixel limit
    assert app.config["MAX_CONTENT_LENGTH"] == 20 * 1024 * 1024
    client = app.test_client()
    assert upload(client, lesion_jpeg(1)).status_code == 201  # the store is not empty: a change would show
    before = snapshot(app)
    r = send(client, case)
    assert r.status_code == status, r.data[:300]
    assert r.is_json and words in r.get_json()["error"], r.get_json()
    assert b"Traceback" not in r.data
    assert snapshot(app) == before
    assert_still_serving(client)


def test_a_burst_of_every_bad_input_leaves_the_server_up_and_the_store_unchanged(client, app):
    before = snapshot(app)
    for _, case, status, _ in BAD_UPLOADS * 2:
        assert send(client, case).status_code == status
    assert snapshot(app) == before
    health = client.get("/healthz").get_json()
    assert health["healthy"] and health["worker_alive"]
    assert_still_serving(client)


@pytest.mark.parametrize(
    ("make", "size"),
    [
        (lambda: png(Image.new("L", (320, 240), 128)), (320, 240)),
        (lambda: png(Image.new("RGBA", (320, 240), (200, 120, 90, 0))), (320, 240)),
        (lambda: png(Image.new("LA", (320, 240), (100, 255))), (320, 240)),
        (lambda: png(Image.new("P", (320, 240), 3)), (320, 240)),
        (lambda: png(Image.fromarray(np.full((240, 320), 40000, np.uint16))), (320, 240)),
        (lambda: png(Image.new("RGB", (320, 240), (180, 140, 120)).convert("CMYK").convert("RGB")), (320, 240)),
    ],
    ids=["grey", "rgba-fully-transparent", "grey-alpha", "palette", "16-bit-grey", "rgb"],
)
def test_grey_alpha_palette_and_16_bit_uploads_are_screened_and_kept_as_uploaded(client, app, make, size):
    data = make()
    r = upload(client, data, name="x.png")
    assert r.status_code == 201, r.get_json()
    rec = r.get_json()
    assert (rec["image_width"], rec["image_height"]) == size
    image = client.get(rec["image_url"])
    assert image.data == data and image.mimetype == "image/png" and rec["image_path"].endswith(".png")
    assert rec["image_sha256"] == hashlib.sha256(data).hexdigest()
    thumb = Image.open(io.BytesIO(client.get(rec["thumbnail_url"]).data))
    assert thumb.format == "JPEG" and thumb.mode == "RGB"


@pytest.mark.parametrize(("orientation", "upright"), [(1, (640, 480)), (3, (640, 480)), (6, (480, 640)), (8, (480, 640))])
def test_exif_rotated_phone_photo_is_screened_upright_and_kept_with_its_orientation(client, orientation, upright):
    data = jpeg_with_orientation(640, 480, orientation)
    rec = upload(client, data).get_json()
    assert (rec["image_width"], rec["image_height"]) == upright
    assert client.get(rec["image_url"]).data == data  # the tag travels with the file: viewers show it upright
    w, h = Image.open(io.BytesIO(client.get(rec["thumbnail_url"]).data)).size
    assert (w > h) == (upright[0] > upright[1])


# ---------------------------------------------------------------------------------- edge-app classify


@pytest.fixture
def bad_files(tmp_path):
    files = {
        "empty.jpg": b"",
        "truncated.jpg": lesion_jpeg(0)[:1500],
        "bomb.png": BOMB_PNG,
        "notes.jpg": b"patient notes, not an image\n" * 20,
        "header-only.jpg": b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8,
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "a-directory.jpg").mkdir()
    return tmp_path, [*files, "a-directory.jpg", "does-not-exist.jpg"]


def test_classify_rejects_each_bad_file_with_a_message_and_exit_2(bad_files, capsys):
    from tests.app.conftest import model_path

    folder, names = bad_files
    good = folder / "good.jpg"
    good.write_bytes(lesion_jpeg(2))
    paths = [str(folder / n) for n in names]
    code = cli(["classify", *paths, str(good), "--json", "--model", str(model_path())])
    out = capsys.readouterr()
    assert code == 2
    rows = [json.loads(line) for line in out.out.splitlines()]
    assert [r["file"] for r in rows] == [*paths, str(good)]
    for row in rows[:-1]:
        assert row["error"] and "Traceback" not in row["error"], row
    assert rows[-1]["decision"] in ("benign", "malignant")  # a bad file does not stop the others
    assert "decompression bomb" in rows[names.index("bomb.png")]["error"]
    assert "empty" in rows[names.index("empty.jpg")]["error"]
    assert "Traceback" not in out.err and out.err.count("error: ") == len(names)


def test_classify_converts_grey_alpha_16_bit_and_honours_exif(tmp_path, capsys):
    from tests.app.conftest import model_path

    files = {
        "grey.png": png(Image.new("L", (320, 240), 128)),
        "rgba.png": png(Image.new("RGBA", (320, 240), (200, 120, 90, 128))),
        "deep.png": png(Image.fromarray(np.full((240, 320), 40000, np.uint16))),
        "phone.jpg": jpeg_with_orientation(640, 480, 6),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    assert cli(["classify", *(str(tmp_path / n) for n in files), "--json", "--model", str(model_path())]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    # each converts and is screened; flat grey / colour frames are not dermoscopy, so no verdict is a right answer
    assert len(rows) == 4 and all("error" not in r and r["decision"] in ("benign", "malignant", *NO_VERDICT) for r in rows)
