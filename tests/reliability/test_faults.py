"""Issue 7 (2): faults while screening and at start.

After each fault the app keeps serving, and no half-written record, orphan
image or temp file remains (row count and files on disk unchanged).
"""

from __future__ import annotations

import errno
import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from edge_app.cli import main as cli
from tests.app.conftest import model_path
from tests.reliability.helpers import FakeCamera, assert_still_serving, lesion_jpeg, snapshot, upload, wait_for


class FlakyCamera(FakeCamera):
    """Previews fine, then the driver raises in the middle of a full-quality capture."""

    def __init__(self, error: BaseException) -> None:
        super().__init__()
        self.error = error
        self.fail_next_capture = True

    def capture(self):
        if self.fail_next_capture:
            self.fail_next_capture = False
            raise self.error
        return super().capture()


@pytest.mark.parametrize("error", [OSError(errno.EIO, "USB transfer failed"), RuntimeError("driver crashed"),
                                   MemoryError("frame buffer")], ids=["oserror", "runtimeerror", "memoryerror"])
def test_camera_raising_mid_capture_is_503_nothing_stored_and_the_camera_reopens(make_app, error):
    camera = FlakyCamera(error)
    app = make_app(CAMERA=camera)
    client = app.test_client()
    loop = app.extensions["dermaedge"].capture_loop
    wait_for(lambda: loop.status()["state"] == "live")
    before = snapshot(app)
    r = client.post("/api/screenings", data={"operator": "A"})
    assert r.status_code == 503 and "camera failed during capture" in r.get_json()["error"]
    assert snapshot(app) == before
    wait_for(lambda: loop.status()["state"] == "live")  # reconnected by itself
    assert client.post("/api/screenings").status_code == 201
    assert_still_serving(client)


def test_inference_raising_is_a_500_json_without_details_and_the_worker_survives(client, app, monkeypatch):
    service = app.extensions["dermaedge"]
    before = snapshot(app)

    def broken(image):
        raise RuntimeError("Invoke failed: tensor arena corrupted at 0xdeadbeef")

    monkeypatch.setattr(service.classifier, "classify", broken)
    for _ in range(3):
        r = upload(client, lesion_jpeg(1))
        assert r.status_code == 500
        assert r.get_json() == {"error": "internal error; the details are in the device log"}
        assert b"deadbeef" not in r.data
    assert client.post("/api/screenings").status_code == 500  # the camera path too
    assert snapshot(app) == before
    assert service.worker_alive()
    monkeypatch.undo()
    assert_still_serving(client)


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("fail_on_call", [1, 2], ids=["image-write", "thumbnail-write"])  # 3: the directory fsync
def test_disk_full_while_writing_the_image_is_507_and_leaves_no_file(client, app, monkeypatch, fail_on_call):
    real_fsync = os.fsync
    calls = {"n": 0}

    def fsync(fd):
        calls["n"] += 1
        if calls["n"] == fail_on_call:
            _enospc()
        return real_fsync(fd)

    before = snapshot(app)
    monkeypatch.setattr(os, "fsync", fsync)
    r = upload(client, lesion_jpeg(1))
    assert r.status_code == 507, r.get_json()
    assert "disk full" in r.get_json()["error"] and "nothing was stored" in r.get_json()["error"]
    monkeypatch.undo()
    assert snapshot(app) == before  # neither the image, its thumbnail nor a temp file is left
    assert_still_serving(client)


def test_disk_full_while_writing_the_data_itself_is_507(client, app, monkeypatch):
    import builtins

    real_open = builtins.open

    class FullFile:
        def __init__(self, fh):
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        def write(self, data):
            self.fh.write(data[: len(data) // 2])
            _enospc()

        def __getattr__(self, name):
            return getattr(self.fh, name)

    def open_(path, mode="r", *a, **k):
        fh = real_open(path, mode, *a, **k)
        return FullFile(fh) if str(path).endswith(".tmp") and "w" in mode else fh

    before = snapshot(app)
    monkeypatch.setattr(builtins, "open", open_)
    r = upload(client, lesion_jpeg(1))
    monkeypatch.undo()
    assert r.status_code == 507
    assert snapshot(app) == before
    assert_still_serving(client)


def test_database_full_is_507_and_the_image_is_removed(client, app):
    store = app.extensions["dermaedge"].store
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count={pages + 1}")  # SQLITE_FULL once the rows need more pages
    for i in range(40):
        before = snapshot(app)
        r = upload(client, lesion_jpeg(i % 4))
        if r.status_code != 201:
            break
    assert r.status_code == 507 and "disk full" in r.get_json()["error"], r.get_json()
    assert snapshot(app) == before  # the image written before the failed insert is gone again
    store._db.execute("PRAGMA max_page_count=1073741823")
    assert_still_serving(client)


def _hold_write_lock(db_path: Path, seconds: float, started: threading.Event) -> None:
    other = sqlite3.connect(db_path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO screenings (id) SELECT 'x' WHERE 0")  # a writer, as another program would be
    started.set()
    time.sleep(seconds)
    other.execute("ROLLBACK")
    other.close()


def test_database_locked_past_the_busy_timeout_is_503_and_nothing_is_stored(client, app):
    store = app.extensions["dermaedge"].store
    store._db.execute("PRAGMA busy_timeout=300")  # the app waits 10 s; the test does not
    started = threading.Event()
    holder = threading.Thread(target=_hold_write_lock, args=(store.db_path, 3.0, started))
    holder.start()
    started.wait(5)
    try:
        before = snapshot(app)
        r = upload(client, lesion_jpeg(1))
        assert r.status_code == 503 and "locked" in r.get_json()["error"], r.get_json()
        assert snapshot(app) == before
        assert client.get("/api/screenings").status_code == 200  # reads go on under a writer (WAL)
    finally:
        holder.join()
    assert_still_serving(client)


def test_a_short_lock_by_another_writer_is_waited_out(client, app):
    started = threading.Event()
    holder = threading.Thread(target=_hold_write_lock, args=(app.extensions["dermaedge"].store.db_path, 0.5, started))
    holder.start()
    started.wait(5)
    r = upload(client, lesion_jpeg(1))
    holder.join()
    assert r.status_code == 201


# ---------------------------------------------------------------------------------- at start


def _bad_model(tmp_path: Path, kind: str) -> Path:
    from edge_app.manifest import sha256_file

    good = model_path()
    model = tmp_path / "m.tflite"
    manifest = tmp_path / "m.json"
    text = good.with_suffix(".json").read_text()
    if kind == "missing":
        return model
    if kind == "missing-manifest":
        model.write_bytes(good.read_bytes())
        return model
    if kind == "empty":
        model.write_bytes(b"")
    elif kind == "garbage-with-matching-sha":  # a manifest rewritten to match: the runtime itself must refuse it
        model.write_bytes(os.urandom(4096))
    elif kind == "truncated":
        model.write_bytes(good.read_bytes()[:1000])
        manifest.write_text(text)
        return model
    import json

    m = json.loads(text)
    m["tflite_sha256" if "tflite_sha256" in m else "sha256"] = sha256_file(model)
    manifest.write_text(json.dumps(m))
    return model


@pytest.mark.parametrize("kind", ["missing", "missing-manifest", "empty", "garbage-with-matching-sha", "truncated"])
def test_serve_refuses_a_missing_or_corrupt_model_with_a_clear_message(tmp_path, capsys, kind):
    model = _bad_model(tmp_path, kind)
    code = cli(["serve", "--model", str(model), "--camera", "none", "--data-dir", str(tmp_path / "d"), "--port", "8971"])
    err = capsys.readouterr().err
    assert code != 0
    assert "edge-app serve:" in err and str(tmp_path / "m.") in err, err
    assert "Traceback" not in err and len(err.splitlines()) <= 2, err


@pytest.mark.parametrize(
    ("config", "words"),
    [
        ("port = [", "not valid TOML"),
        ("max_upload_mb = -1", "max_upload_mb"),
        ('host = "0.0.0.0"', "access token"),
        ('camera = "usb-thing"', "unknown camera"),
        ("retention_days = 'forever'", "retention_days"),
    ],
)
def test_serve_with_an_invalid_config_file_exits_2_with_a_clear_message(tmp_path, capsys, monkeypatch, config, words):
    monkeypatch.delenv("EDGE_APP_ACCESS_TOKEN", raising=False)
    cfg = tmp_path / "edge-app.toml"
    cfg.write_text(config + "\n")
    assert cli(["serve", "--config", str(cfg), "--model", str(model_path()), "--data-dir", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert "configuration error" in err and words in err and "Traceback" not in err


def test_serve_with_an_unusable_data_dir_exits_1_with_a_clear_message(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert cli(["serve", "--model", str(model_path()), "--camera", "none", "--data-dir", str(blocker / "data")]) != 0
    err = capsys.readouterr().err
    assert "data" in err and "Traceback" not in err
