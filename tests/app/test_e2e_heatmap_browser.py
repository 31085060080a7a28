"""In the browser (waitress + headless Chromium, 800x480): the heatmap behind its toggle on the result
screen and on the detail page, the threshold in force, and an out-of-scope upload with no verdict.

Runs the tiny scope model (features output + sidecar) so it does not depend on which model ships.
Saves test-artifacts/ui-heatmap-800x480.png, ui-heatmap-detail.png and ui-out-of-scope-800x480.png.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import cv2
import pytest

from edge_app.training import ood_images
from tests.app.conftest import ROOT
from tests.app.test_e2e_browser import ARTIFACTS, CHROMIUM, serve_app
from tests.conftest import make_lesion_image

SCOPE_MODEL = ROOT / "tests" / "fixtures" / "tiny_scope_fp16.tflite"

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is not installed (apt install chromium)")


@pytest.fixture
def scoped_server(tmp_path):
    with serve_app(tmp_path, "--camera", "none", "--model", str(SCOPE_MODEL)) as base:
        yield base, tmp_path


def wait_until(page, condition: str, timeout_s: float = 15.0) -> None:
    """Poll a JS condition with page.evaluate (DevTools evaluation; the app's CSP forbids the string eval that
    page.wait_for_function falls back to when the condition is not already true)."""
    deadline = time.monotonic() + timeout_s
    while not page.evaluate(condition):
        assert time.monotonic() < deadline, f"timed out waiting for {condition}"
        time.sleep(0.05)


def assert_card_fits(page) -> None:
    """Issue 19 (8): at 800x480 the whole result card shows, Details and Performance included: nothing
    scrolls inside the card and its links sit inside it and on the screen."""
    fit = page.evaluate("""() => { const c = document.getElementById('result');
        return {scroll: c.scrollHeight, client: c.clientHeight, bottom: c.getBoundingClientRect().bottom}; }""")
    assert fit["scroll"] <= fit["client"] + 1, fit
    for link in ("#result-detail", "#result-perf", "#latency-line"):
        box = page.locator(link).bounding_box()
        assert box and box["y"] + box["height"] <= min(fit["bottom"], 480), (link, box, fit)


def test_heatmap_toggle_on_the_result_and_the_detail_page_and_no_verdict_out_of_scope(scoped_server):
    from playwright.sync_api import expect, sync_playwright

    base, tmp_path = scoped_server
    ARTIFACTS.mkdir(exist_ok=True)
    lesion, text = tmp_path / "lesion.jpg", tmp_path / "form.jpg"
    cv2.imwrite(str(lesion), make_lesion_image(160, 120, seed=5002, vignette=True))
    cv2.imwrite(str(text), ood_images.text(3))
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"])
        try:
            page = browser.new_page(viewport={"width": 800, "height": 480})
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(base + "/")
            expect(page.locator("#threshold-text")).to_contain_text("model default")

            page.set_input_files("#upload", str(lesion))
            expect(page.locator("#result")).to_have_attribute("data-state", re.compile("benign|malignant"), timeout=15_000)
            toggle = page.locator("#heatmap-toggle")
            expect(toggle).to_be_visible()
            expect(page.locator("#heatmap")).to_be_hidden()
            toggle.click()
            expect(toggle).to_have_attribute("aria-pressed", "true")
            overlay, image = page.locator("#heatmap"), page.locator("#shot")
            expect(overlay).to_be_visible()
            wait_until(page, "document.getElementById('heatmap').complete && document.getElementById('shot').naturalWidth > 0")
            o, i = overlay.bounding_box(), image.bounding_box()
            assert o["width"] > 20 and o["height"] == pytest.approx(o["width"], abs=2)  # the analysed square
            assert o["y"] >= i["y"] - 1 and o["y"] + o["height"] <= i["y"] + i["height"] + 1  # over the analysed image
            expect(page.locator("#heatmap-meaning")).to_contain_text("not the lesion's outline or a diagnosis")
            assert_card_fits(page)
            page.screenshot(path=str(ARTIFACTS / "ui-heatmap-800x480.png"))
            toggle.click()
            expect(overlay).to_be_hidden()

            page.click("#result-detail")
            detail = page.locator("#detail-heatmap .heatmap-overlay")
            expect(detail).to_be_visible()
            d, under = detail.bounding_box(), page.locator("#detail-heatmap .heatmap-base").bounding_box()
            assert d["width"] > 50 and d["height"] == pytest.approx(d["width"], abs=2)  # the analysed square
            assert under["x"] - 1 <= d["x"] and d["x"] + d["width"] <= under["x"] + under["width"] + 1  # over its image
            expect(page.locator("#detail-heatmap figcaption")).to_contain_text("not the lesion's outline")
            expect(page.locator(".prob-line")).to_contain_text("threshold in force")
            expect(page.locator(".prob-line")).to_contain_text("model default")
            page.screenshot(path=str(ARTIFACTS / "ui-heatmap-detail.png"), full_page=True)

            page.goto(base + "/")
            page.set_input_files("#upload", str(text))
            expect(page.locator("#result")).to_have_attribute("data-state", "none", timeout=15_000)
            expect(page.locator("#decision")).to_contain_text("not dermoscopy")
            expect(page.locator("#retake-title")).to_contain_text("Retake through the dermatoscope")
            expect(page.locator("#prob")).to_be_hidden()  # no probability bar, no verdict
            expect(page.locator("#heatmap-controls")).to_be_hidden()
            card_text = page.locator("#result").inner_text().lower()
            assert card_text.count("dermoscopy") == 1 and card_text.count("no call") == 1, card_text  # said once
            assert_card_fits(page)
            page.screenshot(path=str(ARTIFACTS / "ui-out-of-scope-800x480.png"))
            phone = browser.new_page(viewport={"width": 390, "height": 844})  # the phone layout: result under its image
            phone.goto(base + "/")
            phone.set_input_files("#upload", str(lesion))
            expect(phone.locator("#heatmap-toggle")).to_be_visible(timeout=15_000)
            assert phone.locator("#heatmap-toggle").bounding_box()["height"] >= 44
            phone.click("#heatmap-toggle")
            expect(phone.locator("#heatmap")).to_be_visible()
            o, i = phone.locator("#heatmap").bounding_box(), phone.locator("#shot").bounding_box()
            assert i["x"] - 1 <= o["x"] and o["x"] + o["width"] <= i["x"] + i["width"] + 1
            assert phone.evaluate("document.documentElement.scrollWidth") <= 390
            assert not [e for e in errors if "Content Security Policy" in e], errors
        finally:
            browser.close()
