"""Camera sources and the capture loop (no real camera needed)."""

from __future__ import annotations

import sys
import types

import cv2
import numpy as np
import pytest

from edge_app.camera import Camera, CameraError, CameraUnavailable, make_camera, parse_camera_spec
from edge_app.camera.folder import FolderCamera
from edge_app.camera.loop import CaptureLoop
from edge_app.camera.none import NoCamera
from edge_app.camera.opencv import OpenCVCamera
from edge_app.camera.picamera2 import Picamera2Camera
from tests.app.conftest import FakeCamera, lesion_image, wait_for


# --------------------------------------------------------------------------- a fake picamera2
# The real signatures have mutable defaults (main={}, raw={}, ...); the fake keeps them on purpose.
# ruff: noqa: B006
class FakePicamera2:
    """Mirrors the documented signatures of picamera2.Picamera2 (raspberrypi/picamera2, picamera2/picamera2.py).

    Only the methods the real class has are defined, with the real parameter
    names and defaults, so an adapter calling anything else (or a wrong keyword)
    fails here with AttributeError / TypeError, as it would on a Pi.
    """

    VALID_STREAM_KEYS = ("format", "size", "stride", "preserve_ar")
    instances: list = []  # noqa: RUF012
    cameras = 1

    def __init__(self, camera_num=0, verbose_console=None, tuning=None, allocator=None):
        if camera_num >= self.cameras:
            raise IndexError("list index out of range")  # what global_camera_info()[n] raises with no camera
        self.calls: list[str] = []
        self.config = None
        self.started = False
        self.is_open = True
        FakePicamera2.instances.append(self)

    def _stream(self, defaults: dict, updates: dict) -> dict:
        for key in updates:
            if key not in self.VALID_STREAM_KEYS:
                raise ValueError(f"Bad key {key!r}: valid stream configuration keys are {self.VALID_STREAM_KEYS}")
        return defaults | updates

    def create_preview_configuration(self, main={}, lores=None, raw={}, transform=None, colour_space=None,
                                     buffer_count=4, controls={}, display="main", encode="main", queue=True,
                                     sensor={}, use_case="preview"):
        self.calls.append("create_preview_configuration")
        return {"use_case": use_case, "main": self._stream({"format": "XBGR8888", "size": (640, 480)}, main)}

    def create_still_configuration(self, main={}, lores=None, raw={}, transform=None, colour_space=None,
                                   buffer_count=1, controls={}, display=None, encode=None, queue=True,
                                   sensor={}, use_case="still"):
        self.calls.append("create_still_configuration")
        return {"use_case": use_case, "main": self._stream({"format": "BGR888", "size": (4056, 3040)}, main)}

    def configure(self, camera_config="preview"):
        self.calls.append("configure")
        self.config = camera_config

    def start(self, config=None, show_preview=False):
        self.calls.append("start")
        self.started = True

    def _array(self, config):
        w, h = config["main"]["size"]
        channels = 4 if config["main"]["format"].startswith("X") else 3
        return np.full((h, w, channels), 128, np.uint8)

    def capture_array(self, name="main", wait=None, signal_function=None):
        assert self.started, "capture_array before start()"
        self.calls.append("capture_array")
        return self._array(self.config)

    def switch_mode_and_capture_array(self, camera_config, name="main", wait=None, signal_function=None, delay=0):
        assert self.started
        self.calls.append("switch_mode_and_capture_array")
        return self._array(camera_config)

    def stop(self):
        self.calls.append("stop")
        self.started = False

    def close(self):
        self.calls.append("close")
        self.is_open = False


@pytest.fixture
def fake_picamera2(monkeypatch):
    module = types.ModuleType("picamera2")
    module.Picamera2 = FakePicamera2
    FakePicamera2.instances = []
    FakePicamera2.cameras = 1
    monkeypatch.setitem(sys.modules, "picamera2", module)
    return FakePicamera2


def test_picamera2_adapter_uses_only_the_real_api(fake_picamera2):
    cam = Picamera2Camera("")
    assert isinstance(cam, Camera)
    cam.open()
    preview = cam.read()
    still = cam.capture()
    cam.close()
    fake = fake_picamera2.instances[0]
    assert preview.shape == (960, 1280, 3) and preview.dtype == np.uint8
    assert still.shape == (3040, 4056, 3)
    assert fake.calls == ["create_preview_configuration", "create_still_configuration", "configure", "start",
                          "capture_array", "switch_mode_and_capture_array", "stop", "close"]
    assert fake.config["main"]["format"] == "RGB888"  # picamera2's RGB888 is B,G,R in memory: OpenCV order


def test_picamera2_missing_camera_and_missing_package_are_clear_errors(fake_picamera2, monkeypatch):
    fake_picamera2.cameras = 0
    with pytest.raises(CameraError, match="no Pi camera"):
        Picamera2Camera("").open()
    monkeypatch.setitem(sys.modules, "picamera2", None)
    with pytest.raises(CameraError, match="apt install python3-picamera2"):
        Picamera2Camera("").open()


def test_auto_prefers_picamera2_then_falls_back_to_upload_only(fake_picamera2, monkeypatch):
    assert make_camera("auto").kind == "picamera2"
    fake_picamera2.cameras = 0
    monkeypatch.setattr(OpenCVCamera, "open", lambda self: (_ for _ in ()).throw(CameraError("no usb")))
    assert make_camera("auto").kind == "none"


@pytest.mark.parametrize("spec", ["", "webcam", "folder", "folder:", "none:1", "auto:x"])
def test_bad_camera_specs_are_refused_with_the_allowed_forms(spec):
    with pytest.raises(CameraError, match="auto|folder:DIR|takes no argument"):
        parse_camera_spec(spec)


def test_camera_specs_parse():
    assert parse_camera_spec("opencv:0") == ("opencv", "0")
    assert parse_camera_spec("folder:/tmp/x:y") == ("folder", "/tmp/x:y")
    assert make_camera("opencv:/dev/video7").device == "/dev/video7"
    assert make_camera("opencv:2").device == 2


def test_folder_camera_replays_images_and_skips_unreadable_files(tmp_path):
    for i in range(2):
        cv2.imwrite(str(tmp_path / f"{i}.png"), lesion_image(i, size=(60, 80)))
    (tmp_path / "broken.jpg").write_bytes(b"nope")
    (tmp_path / "notes.txt").write_text("ignored")
    cam = FolderCamera(str(tmp_path), interval_s=0)
    cam.open()
    frames = [cam.capture() for _ in range(4)]
    assert all(f.shape == (60, 80, 3) for f in frames)
    assert not np.array_equal(frames[0], frames[1])
    assert cam.describe()["images"] == 3


def test_folder_camera_errors(tmp_path):
    with pytest.raises(CameraError, match="does not exist"):
        FolderCamera(str(tmp_path / "missing")).open()
    with pytest.raises(CameraError, match="no images"):
        FolderCamera(str(tmp_path)).open()


def test_opencv_camera_that_is_not_there_is_a_clear_error(tmp_path):
    with pytest.raises(CameraError, match="cannot be opened"):
        OpenCVCamera(str(tmp_path / "video99")).open()


def test_no_camera_says_to_upload():
    with pytest.raises(CameraUnavailable, match="upload"):
        NoCamera().capture()


def test_capture_loop_keeps_a_preview_and_reopens_with_backoff():
    cam = FakeCamera()
    loop = CaptureLoop(cam, preview_fps=50, backoff_initial_s=0.02, backoff_max_s=0.1, tick_s=0.02)
    loop.start()
    try:
        wait_for(lambda: loop.preview_jpeg() is not None)
        assert loop.preview_jpeg()[:2] == b"\xff\xd8"
        assert loop.capture().shape == (480, 640, 3)
        cam.present = False
        wait_for(lambda: loop.status()["state"] == "reconnecting")
        assert "unplugged" in loop.status()["error"] and loop.preview_jpeg() is None
        with pytest.raises(CameraUnavailable, match="not connected"):
            loop.capture()
        cam.present = True
        wait_for(lambda: loop.status()["state"] == "live")
        assert cam.opened >= 2 and loop.heartbeat_age_s() < 1.0
    finally:
        loop.stop()
    assert not loop.is_alive() and not cam.is_open


def test_capture_loop_backoff_grows_and_is_capped():
    cam = FakeCamera()
    cam.present = False
    loop = CaptureLoop(cam, backoff_initial_s=0.01, backoff_max_s=0.04, tick_s=0.01)
    loop.start()
    try:
        wait_for(lambda: cam.opened == 0 and loop._backoff_s == 0.04)
        assert loop.status()["state"] == "reconnecting"
    finally:
        loop.stop()
