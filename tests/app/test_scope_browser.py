"""The advice fits the picture (issue 20): the real server and headless Chromium at the Pi's 800x480.

A phone photo, a text page and a flat colour are not dermoscopy: each shows the "not a dermoscopy
image" screen, says what a dermoscopy image looks like, and shows no probability. A dark dermoscopy
image is dermoscopy: it shows the retake advice of the quality gate. The server is started as
tests/app/test_e2e_browser.py starts it; screenshots go to test-artifacts/.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.app.conftest import lesion_image, model_path
from tests.app.test_e2e_browser import ARTIFACTS, CHROMIUM, VERDICT_WORDS, assert_result_fits, serve_app, wait_result
from tests.conftest import REPO, real_dermoscopy

PHONE_PHOTOS = REPO.parent / "shared" / "data" / "pad_ufes20"
NOT_DERMOSCOPY = "No result: not dermoscopy"
PERCENT = re.compile(r"\d\s*%|probability", re.IGNORECASE)

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is not installed (apt install chromium)")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from edge_app.runtime import Classifier

    if not Classifier(model_path(), num_threads=1).has_scope:
        pytest.skip(f"{model_path().name} has no scope check")
    tmp_path = tmp_path_factory.mktemp("scope-e2e")
    frames = tmp_path / "frames"
    frames.mkdir()
    cv2.imwrite(str(frames / "lesion.jpg"), lesion_image(0, size=(720, 960)))
    with serve_app(tmp_path, "--camera", f"folder:{frames}", "--model", str(model_path())) as base:
        yield base, tmp_path


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"])
        ctx = browser.new_context(viewport={"width": 800, "height": 480}, has_touch=True)
        yield ctx.new_page()
        browser.close()


def upload(page, base: str, path: Path) -> dict:
    from playwright.sync_api import expect

    page.goto(base + "/")
    expect(page.locator("#upload")).to_be_attached(timeout=10_000)
    with page.expect_response(lambda r: r.url.endswith("/api/screenings") and r.request.method == "POST") as reply:
        page.set_input_files("#upload", str(path))
    assert reply.value.status == 201, reply.value.text()
    record = reply.value.json()
    wait_result(page, "none")
    shot = re.compile(re.escape(record["image_url"]))  # this record's result, not the one before
    expect(page.locator("#shot")).to_have_attribute("src", shot, timeout=15_000)
    return record


def phone_photo(tmp_path: Path) -> Path:
    if not (PHONE_PHOTOS / "labels.csv").is_file():
        pytest.skip(f"{PHONE_PHOTOS} not staged (the phone photos are never copied into the repo)")
    with open(PHONE_PHOTOS / "labels.csv", newline="") as f:
        return PHONE_PHOTOS / next(csv.DictReader(f))["file"]


def text_page(tmp_path: Path) -> Path:
    img = np.full((480, 640, 3), 245, np.uint8)
    for i, line in enumerate(("PATIENT CONSENT FORM", "Name: ____________", "I agree to the screening", "Signature:")):
        cv2.putText(img, line, (30, 80 + 70 * i), cv2.FONT_HERSHEY_SIMPLEX, 1.1, (20, 20, 20), 2)
    path = tmp_path / "text.png"
    cv2.imwrite(str(path), img)
    return path


def flat_colour(tmp_path: Path) -> Path:
    path = tmp_path / "flat.png"
    cv2.imwrite(str(path), np.full((480, 640, 3), (60, 140, 200), np.uint8))
    return path


@pytest.mark.parametrize("make", [phone_photo, text_page, flat_colour], ids=["phone_photo", "text_page", "flat_colour"])
def test_a_picture_that_is_not_dermoscopy_is_told_so_with_what_dermoscopy_looks_like_and_no_probability(page, server, make):
    from playwright.sync_api import expect

    base, tmp_path = server
    record = upload(page, base, make(tmp_path))
    assert record["decision"] == "out_of_scope", record
    expect(page.locator("#decision")).to_have_text(NOT_DERMOSCOPY)
    card = page.locator("#result").inner_text()
    assert not VERDICT_WORDS.search(card) and not PERCENT.search(card), card
    expect(page.locator("#prob")).to_be_hidden()
    advice = page.locator("#retake").inner_text()
    assert "dermatoscope" in advice and "lesion centred" in advice, advice  # what a dermoscopy image looks like
    assert not re.search(r"too dark|over-exposed|blurry|no lesion", advice, re.IGNORECASE), advice  # not the gate's advice
    assert_result_fits(page)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"scope-{make.__name__}-800x480.png"))


def test_a_dark_dermoscopy_image_gets_the_retake_advice(page, server):
    from playwright.sync_api import expect

    base, tmp_path = server
    dark = tmp_path / "dark.jpg"
    real = real_dermoscopy(1, (640, 480))  # a real dermoscopy image under-lit to a mean grey of about 25
    frame = lesion_image(4, brightness=0.15) if real is None else \
        np.clip(real * (25.0 / cv2.cvtColor(real, cv2.COLOR_BGR2GRAY).mean()), 0, 255).astype(np.uint8)
    cv2.imwrite(str(dark), frame)
    record = upload(page, base, dark)
    assert record["decision"] == "inconclusive", record
    expect(page.locator("#decision")).to_have_text("No result: retake")
    expect(page.locator("#retake-list")).to_contain_text("too dark")
    card = page.locator("#result").inner_text()
    assert not VERDICT_WORDS.search(card) and not PERCENT.search(card), card
    expect(page.locator("#prob")).to_be_hidden()
    page.screenshot(path=str(ARTIFACTS / "scope-dark-dermoscopy-800x480.png"))
