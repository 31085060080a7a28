"""deploy/kiosk/edge-app-kiosk: waits for /healthz, then opens Chromium full screen with no dialogs."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from .conftest import DEPLOY

LAUNCHER = DEPLOY / "kiosk" / "edge-app-kiosk"
KIOSK_FLAGS = ["--kiosk", "--noerrdialogs", "--disable-infobars", "--no-first-run", "--disable-session-crashed-bubble",
               "--enable-wayland-ime", "--wayland-text-input-version=3"]  # text fields reach the on-screen keyboard


def test_browser_command_is_full_screen_without_dialogs_and_points_at_the_local_app(tmp_path):
    env = {**os.environ, "HOME": str(tmp_path), "EDGE_APP_KIOSK_BROWSER": "chromium"}
    env.pop("EDGE_APP_KIOSK_URL", None)
    out = subprocess.run(
        [str(LAUNCHER), "--print-command"], env=env, capture_output=True, text=True, check=True, timeout=10
    ).stdout.split()
    assert out[0] == "chromium"
    for flag in KIOSK_FLAGS:
        assert flag in out
    assert out[-1] == "http://127.0.0.1:8080"


def test_browser_starts_only_once_healthz_answers(tmp_path):
    if shutil.which("curl") is None:
        pytest.skip("curl not installed (the kiosk depends on it; apt-get install curl)")
    hits: list[str] = []

    class Health(BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            self.send_response(200 if self.path == "/healthz" and len(hits) >= 3 else 503)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    # A stand-in browser: records its arguments and how many health checks came first, then stops the launcher.
    record = tmp_path / "browser-args"
    browser = tmp_path / "fake-chromium"
    browser.write_text(f'#!/bin/bash\nprintf "%s\\n" "$@" > {record}\nkill -TERM $PPID\n')
    browser.chmod(0o755)
    url = f"http://127.0.0.1:{server.server_port}"
    env = {**os.environ, "HOME": str(tmp_path), "EDGE_APP_KIOSK_BROWSER": str(browser), "EDGE_APP_KIOSK_URL": url}
    try:
        subprocess.run([str(LAUNCHER)], env=env, check=False, capture_output=True, text=True, timeout=20)
    finally:
        server.shutdown()
    assert hits[:3] == ["/healthz"] * 3, "the browser must wait until /healthz returns 200"
    args = Path(record).read_text().split()
    assert args[-1] == url and "--kiosk" in args


def test_the_on_screen_keyboard_is_started_before_the_browser_unless_turned_off(tmp_path):
    if shutil.which("curl") is None:
        pytest.skip("curl not installed (the kiosk depends on it; apt-get install curl)")

    class Health(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    started = tmp_path / "keyboard-started"
    settings = tmp_path / "gsettings-calls"
    tools = {
        "squeekboard": f'#!/bin/bash\ntouch {started}\n',
        "gsettings": f'#!/bin/bash\necho "$*" >> {settings}\n',
        "fake-chromium": (f'#!/bin/bash\nsleep 0.3\n[ -e {started} ] && echo keyboard-first > {tmp_path}/order\n'
                          'kill -TERM $PPID\n'),
    }
    for name, body in tools.items():
        (bin_dir / name).write_text(body)
        (bin_dir / name).chmod(0o755)
    env = {**os.environ, "HOME": str(tmp_path), "PATH": f"{bin_dir}:{os.environ['PATH']}",
           "EDGE_APP_KIOSK_BROWSER": str(bin_dir / "fake-chromium"), "EDGE_APP_KIOSK_URL": f"http://127.0.0.1:{server.server_port}"}
    try:
        subprocess.run([str(LAUNCHER)], env=env, check=False, capture_output=True, text=True, timeout=20)
        assert (tmp_path / "order").read_text().strip() == "keyboard-first"
        assert "set org.gnome.desktop.a11y.applications screen-keyboard-enabled true" in settings.read_text()
        started.unlink()
        (tmp_path / "order").unlink()
        subprocess.run([str(LAUNCHER)], env=env | {"EDGE_APP_KIOSK_KEYBOARD": "off"}, check=False, capture_output=True,
                       text=True, timeout=20)
        assert not started.exists()
    finally:
        server.shutdown()
