"""In Chromium at 800x480 with touch (and a phone for the referral link): the live preview's tapped frame is the
stored one, guidance shows before the tap, a TIFF upload displays, the browser's timings reach the Performance page,
and the referral sheet opens as a PDF naming the record and the model."""

from __future__ import annotations

import io
import re

import cv2
import numpy as np
import pytest

from benchmarks.browser_latency import SIGNATURE_JS, signature  # the benchmark's frame match, one implementation
from tests.app.conftest import lesion_image, model_path
from tests.app.test_e2e_browser import CHROMIUM, browser, get_json, serve_app  # noqa: F401 - `browser` is a fixture

pytestmark = pytest.mark.skipif(not __import__("pathlib").Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is not installed")


@pytest.fixture(scope="module")
def live_server(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("live")
    frames = tmp_path / "frames"
    frames.mkdir()
    scenes = []
    for i in range(3):
        img = lesion_image(i, size=(960, 1280)).copy()
        img[:120] = 30 + 90 * i  # each scene with its own band: tells them apart on pixels
        cv2.imwrite(str(frames / f"scene{i}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 92])
        scenes.append(signature(cv2.imread(str(frames / f"scene{i}.jpg"))))
    with serve_app(tmp_path, "--camera", f"folder:{frames}", "--model", str(model_path())) as base:
        yield base, tmp_path, scenes


def new_page(browser, size=(800, 480)):  # noqa: F811 - the imported fixture's value
    ctx = browser.new_context(viewport={"width": size[0], "height": size[1]}, has_touch=True)
    return ctx, ctx.new_page()


def poll(page, js: str, timeout_ms: int = 15_000):
    for _ in range(timeout_ms // 25):
        value = page.evaluate(js)
        if value:
            return value
        page.wait_for_timeout(25)
    raise AssertionError(f"never true: {js}")


def test_the_tapped_preview_frame_is_the_analysed_one_and_guidance_shows_before_the_tap(browser, live_server):  # noqa: F811
    from playwright.sync_api import expect

    base, _, scenes = live_server
    ctx, page = new_page(browser)
    page.goto(base + "/")
    expect(page.locator("#live")).to_be_visible(timeout=15_000)
    expect(page.locator("#guidance")).to_be_visible(timeout=5_000)
    expect(page.locator("#guidance")).to_have_text(re.compile(r"\w"))
    ids = [page.evaluate("() => window.dermaPreview.shownId()")]
    page.wait_for_timeout(600)
    ids.append(page.evaluate("() => window.dermaPreview.shownId()"))
    assert ids[1] > ids[0] > 0  # frames keep arriving, ids increase
    matches = 0
    for _ in range(2):
        first = np.array(page.evaluate(SIGNATURE_JS), np.float32)
        for _ in range(200):  # tap right after the scene changes on screen: where a lagging preview got it wrong
            if np.abs(np.array(page.evaluate(SIGNATURE_JS), np.float32) - first).mean() > 8:
                break
            page.wait_for_timeout(15)
        box = page.locator("#capture").bounding_box()
        page.touchscreen.tap(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        expect(page.locator("#result")).to_have_attribute("data-state", re.compile("benign|malignant|none"), timeout=15_000)
        shown = np.array(page.evaluate(SIGNATURE_JS), np.float32)  # the canvas stays frozen on the tapped frame
        rec = get_json(base + "/api/screenings?limit=1")["screenings"][0]
        stored = signature(cv2.imdecode(np.frombuffer(page.request.get(base + rec["image_url"]).body(), np.uint8), 1))
        same = (int(np.argmin([np.abs(shown - s).mean() for s in scenes]))
                == int(np.argmin([np.abs(stored - s).mean() for s in scenes])))
        matches += same and float(np.abs(shown - stored).mean()) < 6
        expect(page.locator("#shot")).to_have_attribute("src", rec["screen_url"])
        timing = poll(page, "() => window.dermaTiming.last && window.dermaTiming.last.record_id === "
                            + repr(rec["id"]).replace("'", '"') + " && window.dermaTiming.last")
        assert 0 < timing["verdict"] <= timing["image"]
        page.evaluate("() => sessionStorage.clear()")
        page.goto(base + "/")
        expect(page.locator("#live")).to_be_visible(timeout=15_000)
    assert matches == 2
    page.goto(base + "/performance")
    row = page.locator('tr[data-kind="capture"][data-key="tap_to_image"]')
    expect(row).to_be_visible()
    assert int(row.locator("td").first.inner_text()) >= 2
    ctx.close()


def test_a_tiff_upload_displays_its_rendition(browser, live_server):  # noqa: F811
    from PIL import Image
    from playwright.sync_api import expect

    base, tmp_path, _ = live_server
    tiff = tmp_path / "lesion.tif"
    Image.fromarray(lesion_image(5)[..., ::-1]).save(tiff, "TIFF")
    ctx, page = new_page(browser)
    page.goto(base + "/")
    expect(page.locator("#screen")).to_have_attribute("data-state", "ready", timeout=10_000)
    page.set_input_files("#upload", str(tiff))
    expect(page.locator("#result")).to_have_attribute("data-state", re.compile("benign|malignant|none"), timeout=15_000)
    shot = page.locator("#shot")
    expect(shot).to_be_visible()
    poll(page, "() => document.getElementById('shot').complete && document.getElementById('shot').naturalWidth > 0")
    ctx.close()


@pytest.mark.parametrize("size", [(800, 480), (390, 844)], ids=["800x480", "390x844"])
def test_the_referral_sheet_link_opens_a_pdf_naming_the_record_and_model(browser, live_server, size):  # noqa: F811
    from playwright.sync_api import expect
    from pypdf import PdfReader

    base, _, _ = live_server
    ctx, page = new_page(browser, size)
    page.goto(base + "/")
    expect(page.locator("#capture")).to_be_enabled(timeout=15_000)
    page.fill("#lesion_ref", "P-0321 shin")
    page.locator("#capture").tap()
    expect(page.locator("#result-detail")).to_be_visible(timeout=15_000)
    rec = get_json(base + "/api/screenings?limit=1")["screenings"][0]
    for url in (rec["detail_url"], rec["follow_up_url"]):
        page.goto(base + url)
        link = page.locator("#referral-link")
        expect(link).to_be_visible()
        box = link.bounding_box()
        assert box["height"] >= 44 and box["width"] >= 44
        reply = page.request.get(base + link.get_attribute("href"))
        assert reply.status == 200 and reply.headers["content-type"] == "application/pdf"
        reader = PdfReader(io.BytesIO(reply.body()))
        text = reader.pages[0].extract_text()
        assert len(reader.pages) == 1 and rec["id"] in text and rec["model_sha256"] in text
    ctx.close()
