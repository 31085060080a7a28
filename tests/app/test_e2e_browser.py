"""End to end: the real waitress server with an image-folder camera, driven by headless Chromium.

Open the screen at 800x480 (the official 7" touchscreen), tap Capture, see the
result and the latency panel, upload a photo, find both in history. Saves
test-artifacts/ui-800x480.png (and the history page) for a human to look at.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.app.conftest import ROOT, lesion_image, model_path

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts"

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is not installed (apt install chromium)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    import cv2

    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(3):
        cv2.imwrite(str(frames / f"lesion{i}.jpg"), lesion_image(i, size=(720, 960)))
    port = free_port()
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    env.pop("EDGE_APP_CONFIG", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_app.cli.serve", "--port", str(port), "--camera", f"folder:{frames}",
         "--data-dir", str(tmp_path / "data"), "--model", str(model_path())],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=1) as r:
                if json.load(r)["healthy"]:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("edge-app serve did not become healthy:\n" + (proc.stdout.read() if proc.stdout else ""))
        time.sleep(0.1)
    yield base, tmp_path
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_tap_capture_see_result_and_latency_then_history(server):
    from playwright.sync_api import expect, sync_playwright

    base, tmp_path = server
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--no-first-run", "--disable-sync"],
        )
        try:
            page = browser.new_page(viewport={"width": 800, "height": 480})
            console_errors: list[str] = []
            page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
            page.goto(base + "/")
            expect(page.locator("#camera-status")).to_contain_text("live", timeout=10_000)
            expect(page.locator("#preview")).to_be_visible(timeout=10_000)
            page.fill("#operator", "Amina")
            page.fill("#lesion_ref", "P-0142 left forearm")

            started = time.perf_counter()
            page.click("#capture")
            expect(page.locator("#result")).to_have_attribute("data-state", re.compile("benign|malignant"), timeout=15_000)
            tap_to_result_ms = (time.perf_counter() - started) * 1000
            expect(page.locator("#decision")).to_contain_text(re.compile("Low suspicion|Suspicious"))
            expect(page.locator("#prob-text")).to_contain_text("%")
            expect(page.locator("#result")).to_contain_text("Screening aid, not a diagnosis")
            total = page.locator('#latency tr[data-stage="total"] td.this')
            expect(total).not_to_have_text("–")
            expect(page.locator('#latency tr[data-stage="inference"] td.p50')).not_to_have_text("–", timeout=6_000)
            # the main flow fits the 800x480 screen without scrolling
            assert page.evaluate("document.documentElement.scrollHeight") <= 480
            assert page.evaluate("document.documentElement.scrollWidth") <= 800
            page.screenshot(path=str(ARTIFACTS / "ui-800x480.png"))
            print(f"tap -> result in the browser: {tap_to_result_ms:.0f} ms; device path total {total.inner_text()} ms")

            # upload a photo through the hidden file input
            photo = tmp_path / "phone.jpg"
            import cv2

            cv2.imwrite(str(photo), lesion_image(9))
            with page.expect_response(lambda r: r.url.endswith("/api/screenings") and r.request.method == "POST") as reply:
                page.set_input_files("#upload", str(photo))
            assert reply.value.status == 201
            expect(page.locator("#result")).to_have_attribute("data-state", re.compile("benign|malignant"))

            page.click("nav >> text=History")
            expect(page.locator(".history-item")).to_have_count(2)
            expect(page.locator(".history-item").first).to_contain_text("upload")
            expect(page.locator(".chip")).to_contain_text("P-0142")
            page.screenshot(path=str(ARTIFACTS / "ui-history-800x480.png"))
            page.click(".chip")
            expect(page.locator(".trend-chart")).to_be_visible()
            page.screenshot(path=str(ARTIFACTS / "ui-follow-up-800x480.png"))
            assert not [e for e in console_errors if "Content Security Policy" in e], console_errors
        finally:
            browser.close()
