"""Shared checks for the reliability tests: what the store holds, on disk and in the database."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from tests.app.conftest import FakeCamera, lesion_image, lesion_jpeg, wait_for  # noqa: F401


def upload(client, data: bytes, name: str = "lesion.jpg", **kw):
    headers = kw.pop("headers", None)
    return client.post("/api/screenings", data={"image": (io.BytesIO(data), name), **kw},
                       content_type="multipart/form-data", headers=headers)


def snapshot(app) -> tuple[int, list[str]]:
    """(row count, every file under the images directory, temp files included)."""
    data = Path(app.config["DATA_DIR"])
    files = sorted(p.relative_to(data).as_posix() for p in (data / "images").rglob("*") if p.is_file())
    return app.extensions["dermaedge"].store.counts()["total"], files


def assert_still_serving(client) -> None:
    """The app answers health checks and screens a good image after the fault."""
    assert client.get("/healthz").status_code == 200
    r = upload(client, lesion_jpeg(11))
    assert r.status_code == 201, r.get_json()


def png(img: Image.Image, **save) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", **save)
    return buf.getvalue()


def jpeg_with_orientation(width: int, height: int, orientation: int) -> bytes:
    img = Image.fromarray(lesion_image(3, size=(height, width))[..., ::-1])
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif.tobytes())
    return buf.getvalue()
