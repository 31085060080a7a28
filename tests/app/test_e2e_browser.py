"""End to end: the real waitress server with an image-folder camera, driven by headless Chromium.

One server and one browser for the module (CI has 2 cores); every test runs at the Pi
touchscreen's 800x480 and a phone's 390x844, in a fresh browser context with touch.
Each defect of issue 13 has its test here: the result beside the record's own image,
one record per double tap, no verdict on a dark image, a second upload refused
visibly, a reload during a capture, Back from Details, nothing wider than its column,
every control at least 44 px. Screenshots go to test-artifacts/ for a person to look at.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import cv2
import pytest

from tests.app.conftest import ROOT, lesion_image, model_path

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts"
VIEWPORTS = {"800x480": {"width": 800, "height": 480}, "390x844": {"width": 390, "height": 844}}
VERDICT_WORDS = re.compile(r"benign|malignant|suspicion|suspicious|refer\b", re.IGNORECASE)

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is not installed (apt install chromium)")

# Every visible element of a column must stay inside it, unless a scrolling/clipping box holds it.
OVERFLOW_JS = """() => {
  const bad = [];
  const root = document.documentElement;
  if (root.scrollWidth > root.clientWidth + 1) bad.push('page scrolls sideways: ' + root.scrollWidth + ' > ' + root.clientWidth);
  // the Screen page's two columns (one on a phone, where the sections dissolve into .screen)
  let columns = [...document.querySelectorAll('.screen > section')].filter((c) => c.getBoundingClientRect().width > 0);
  if (!columns.length) columns = [document.querySelector('.screen') || document.querySelector('.main')];
  const clipped = (el, col) => {
    for (let p = el.parentElement; p && p !== col; p = p.parentElement) {
      const o = getComputedStyle(p).overflowX;
      if (o !== 'visible') return true;
    }
    return false;
  };
  for (const col of columns) {
    const c = col.getBoundingClientRect();
    for (const el of col.querySelectorAll('*')) {
      const r = el.getBoundingClientRect();
      if (r.width < 2 || r.height < 2 || el.closest('[hidden]') || clipped(el, col)) continue;
      if (r.right > c.right + 0.5 || r.left < c.left - 0.5)
        bad.push((el.id || el.className || el.tagName) + ' ' + Math.round(r.left) + '..' + Math.round(r.right)
                 + ' outside column ' + Math.round(c.left) + '..' + Math.round(c.right));
    }
  }
  return bad;
}"""

SMALL_CONTROLS_JS = """() => {
  const bad = [];
  for (const el of document.querySelectorAll('a[href], button, input, select, textarea, label[for]')) {
    const r = el.getBoundingClientRect();
    const s = getComputedStyle(el);
    if (r.width <= 1 || r.height <= 1 || s.visibility === 'hidden' || el.closest('[hidden]')) continue;
    if (r.height < 44 || r.width < 44)
      bad.push((el.id || el.textContent.trim().slice(0, 20) || el.tagName) + ' ' + Math.round(r.width)
               + 'x' + Math.round(r.height));
  }
  return bad;
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.load(r)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("e2e")
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(3):
        cv2.imwrite(str(frames / f"lesion{i}.jpg"), lesion_image(i, size=(720, 960)))
    with serve_app(tmp_path, "--camera", f"folder:{frames}", "--model", str(model_path())) as base:
        yield base, tmp_path


@contextlib.contextmanager
def serve_app(tmp_path: Path, *args: str):
    """`edge-app serve` on a free port with its data under `tmp_path`, until it says healthy; stopped after."""
    port = free_port()
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    env.pop("EDGE_APP_CONFIG", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_app.cli.serve", "--port", str(port), "--data-dir", str(tmp_path / "data"), *args],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if get_json(base + "/healthz")["healthy"]:
                break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("edge-app serve did not become healthy:\n" + (proc.stdout.read() if proc.stdout else ""))
        time.sleep(0.1)
    try:
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--no-first-run", "--disable-sync"],
        )
        yield b
        b.close()


@pytest.fixture(params=list(VIEWPORTS))
def page(request, browser, server):
    ctx = browser.new_context(viewport=VIEWPORTS[request.param], has_touch=True)
    pg = ctx.new_page()
    pg.errors = []
    pg.on("console", lambda m: pg.errors.append(m.text) if m.type == "error" else None)
    pg.size = request.param
    yield pg
    assert not [e for e in pg.errors if "Content Security Policy" in e], pg.errors
    ctx.close()


def wait_until(page, predicate, timeout_ms: int = 10_000) -> None:
    """Let Playwright dispatch route handlers while waiting for what they record."""
    for _ in range(timeout_ms // 50):
        if predicate():
            return
        page.wait_for_timeout(50)


def total(base: str) -> int:
    return get_json(base + "/api/stats")["counts"]["total"]


def newest(base: str) -> dict:
    return get_json(base + "/api/screenings?limit=1")["screenings"][0]


def open_screen(page, base: str) -> None:
    from playwright.sync_api import expect

    page.goto(base + "/")
    expect(page.locator("#screen")).to_have_attribute("data-state", "ready", timeout=10_000)
    expect(page.locator("#live")).to_be_visible(timeout=10_000)
    expect(page.locator("#capture")).to_be_enabled(timeout=10_000)


def wait_result(page, states: str = "benign|malignant|none") -> None:
    from playwright.sync_api import expect

    expect(page.locator("#result")).to_have_attribute("data-state", re.compile(states), timeout=15_000)


def assert_layout(page, name: str) -> None:
    page.wait_for_load_state("load")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"ui-{name}-{page.size}.png"))
    assert page.evaluate(OVERFLOW_JS) == [], name
    assert page.evaluate(SMALL_CONTROLS_JS) == [], name


def assert_result_fits(page) -> None:
    """Nothing of the result card is cut off or needs scrolling: its last line sits inside it."""
    card = page.locator("#result").bounding_box()
    last = page.locator("#latency-line").bounding_box()
    assert last["y"] + last["height"] <= card["y"] + card["height"], (last, card)


def test_result_sits_beside_the_records_own_image_and_busy_clears_the_old_result(page, server):
    from playwright.sync_api import expect

    base, _ = server
    open_screen(page, base)
    assert_layout(page, "capture")
    page.fill("#lesion_ref", "P-0142 forearm")
    page.click("#capture")
    wait_result(page)
    rec = newest(base)
    shot = page.locator("#shot")
    expect(shot).to_be_visible()
    expect(page.locator("#live")).to_be_hidden()
    assert shot.get_attribute("src") == rec["screen_url"]
    shown = page.evaluate("async (u) => Array.from(new Uint8Array(await (await fetch(u)).arrayBuffer()))", rec["image_url"])
    assert hashlib.sha256(bytes(shown)).hexdigest() == rec["image_sha256"]
    page.wait_for_timeout(1200)  # the folder camera moves on; the analysed image stays
    assert shot.get_attribute("src") == rec["screen_url"] and page.locator("#live").is_hidden()
    expect(page.locator("#prob-text")).to_have_text("Malignant probability " + rec["probability_text"])
    expect(page.locator("#latency-line")).to_contain_text("Analysed in")
    # the result is the largest text on the screen; probability and disclaimer readable
    sizes = page.evaluate("""() => ['#decision', '#prob-text', '.disclaimer'].map(
        (s) => parseFloat(getComputedStyle(document.querySelector(s)).fontSize))""")
    assert sizes[0] >= 26 and sizes[1] >= 16 and sizes[2] >= 14, sizes
    if page.size == "800x480":
        assert page.evaluate("document.documentElement.scrollHeight") <= 480
    assert_result_fits(page)
    assert_layout(page, "result")

    # busy: the previous result's words, bar and links are gone while the next one runs
    held = []
    page.route("**/api/screenings", lambda route: held.append(route) if route.request.method == "POST" else route.continue_())
    page.wait_for_timeout(900)  # past the double-tap guard
    page.click("#next")
    expect(page.locator("#live")).to_be_visible(timeout=5_000)
    page.click("#capture")
    expect(page.locator("#result")).to_have_attribute("data-state", "busy")
    for hidden in ("#prob", "#result-links", "#latency-line", "#retake"):
        expect(page.locator(hidden)).to_be_hidden()
    assert rec["probability_text"] not in page.locator("#result").inner_text()
    wait_until(page, lambda: held)
    held[0].continue_()
    wait_result(page)
    page.unroute("**/api/screenings")


@pytest.mark.parametrize("gap_ms", [60, 400])
def test_a_double_tap_on_capture_stores_one_record_and_keeps_the_result(page, server, gap_ms):
    from playwright.sync_api import expect

    base, _ = server
    open_screen(page, base)
    before = total(base)
    box = page.locator("#capture").bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.touchscreen.tap(x, y)
    page.wait_for_timeout(gap_ms)
    page.touchscreen.tap(x, y)
    wait_result(page)
    page.wait_for_timeout(1000)
    assert total(base) == before + 1
    expect(page.locator("#shot")).to_be_visible()  # the second tap did not dismiss the result
    assert page.locator("#shot").get_attribute("src") == newest(base)["screen_url"]


def test_a_dark_blurry_upload_gets_no_verdict_and_offers_retake(page, server):
    from playwright.sync_api import expect

    base, tmp_path = server
    open_screen(page, base)
    dark = tmp_path / "dark.jpg"
    cv2.imwrite(str(dark), lesion_image(4, brightness=0.15, blur=6))
    with page.expect_response(lambda r: r.url.endswith("/api/screenings") and r.request.method == "POST") as reply:
        page.set_input_files("#upload", str(dark))
    assert reply.value.status == 201 and reply.value.json()["decision"] == "inconclusive"
    wait_result(page, "none")
    card = page.locator("#result")
    expect(page.locator("#decision")).to_have_text("No result: retake")
    assert not VERDICT_WORDS.search(card.inner_text()), card.inner_text()
    expect(page.locator("#retake-list")).to_contain_text("too dark")
    expect(page.locator("#retake-btn")).to_be_visible()
    expect(page.locator("#prob")).to_be_hidden()
    colours = page.evaluate("""() => [getComputedStyle(document.querySelector('#decision')).color,
        getComputedStyle(document.querySelector('#result')).borderLeftColor]""")
    assert not {"rgb(31, 122, 77)", "rgb(180, 35, 24)"} & set(colours), colours  # neither benign green nor malignant red
    assert page.locator("#shot").get_attribute("src") == reply.value.json()["screen_url"]
    assert_result_fits(page)
    assert_layout(page, "inconclusive")
    page.wait_for_timeout(900)
    page.click("#retake-btn")
    expect(page.locator("#live")).to_be_visible(timeout=5_000)
    expect(page.locator("#screen")).to_have_attribute("data-state", "ready")


def test_a_second_upload_while_one_runs_is_refused_with_a_message(page, server):
    from playwright.sync_api import expect

    base, tmp_path = server
    open_screen(page, base)
    before = total(base)
    files = []
    for i in (1, 2):
        files.append(tmp_path / f"phone{i}.jpg")
        cv2.imwrite(str(files[-1]), lesion_image(10 + i))
    held = []
    page.route("**/api/screenings", lambda route: held.append(route))
    page.set_input_files("#upload", str(files[0]))
    expect(page.locator("#result")).to_have_attribute("data-state", "busy")
    page.set_input_files("#upload", str(files[1]))
    expect(page.locator("#notice")).to_be_visible()
    expect(page.locator("#notice")).to_contain_text("phone2.jpg")
    assert len(held) == 1
    held[0].continue_()
    wait_result(page)
    page.unroute("**/api/screenings")
    assert total(base) == before + 1


def test_a_reload_during_a_capture_shows_its_result_and_keeps_the_lesion_reference(page, server):
    from playwright.sync_api import expect

    base, _ = server
    open_screen(page, base)
    page.fill("#lesion_ref", "P-RELOAD")
    before = total(base)
    reached = []

    def reach_server_then_drop(route):
        reached.append(route.fetch())  # the server stores the record; the page never hears back

    page.route("**/api/screenings", reach_server_then_drop)
    page.click("#capture")
    wait_until(page, lambda: reached)
    assert reached and total(base) == before + 1
    page.unroute("**/api/screenings")
    page.reload()
    wait_result(page)
    rec = newest(base)
    assert rec["lesion_ref"] == "P-RELOAD"
    assert page.locator("#shot").get_attribute("src") == rec["screen_url"]
    expect(page.locator("#lesion_ref")).to_have_value("P-RELOAD")
    assert total(base) == before + 1


def test_back_from_details_keeps_the_screen_and_the_lesion_reference(page, server):
    from playwright.sync_api import expect

    base, _ = server
    open_screen(page, base)
    page.fill("#lesion_ref", "P-BACK")
    page.click("#capture")
    wait_result(page)
    rec = newest(base)
    page.wait_for_timeout(900)
    page.click("#result-detail")
    expect(page.locator(".detail")).to_be_visible()
    assert_layout(page, "detail")
    for how in ("browser back", "back button"):
        if how == "browser back":
            page.go_back()
        else:
            page.click("#result-detail")
            expect(page.locator(".detail")).to_be_visible()
            page.click("#back-to-screen")
            page.wait_for_load_state("load")
        wait_result(page)
        expect(page.locator("#lesion_ref")).to_have_value("P-BACK")
        assert page.locator("#shot").get_attribute("src") == rec["screen_url"], how


def test_history_follow_up_and_performance_fit_and_have_big_targets(page, server):
    from playwright.sync_api import expect

    base, _ = server
    page.goto(base + "/history")
    expect(page.locator(".history-item").first).to_be_visible()
    expect(page.locator(".history-item.decision-none").first).to_contain_text("No result: retake")
    assert_layout(page, "history")
    page.click(".chip >> text=P-0142")
    page.wait_for_load_state("load")  # the stylesheet decides which of the two charts shows
    expect(page.locator(".trend-chart:visible")).to_be_visible()
    # chart text readable on the phone too (12 SVG units drawn at >= 10 px)
    label = page.locator(".trend-chart:visible text").first.bounding_box()
    assert label["height"] >= 10, label
    strip = page.locator(".strip-item img").first.get_attribute("src")
    assert strip.endswith("size=thumb")
    assert_layout(page, "follow-up")
    page.click("nav >> text=Performance")
    page.wait_for_load_state("load")
    expect(page.locator('#latency tr[data-stage="inference"] td.p50')).not_to_have_text("–")
    expect(page.locator(".latency-chart")).to_be_visible()
    assert_layout(page, "performance")
