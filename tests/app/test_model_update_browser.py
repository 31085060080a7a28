"""End to end: `edge-app model install` while the real server runs and the screen is open.

The screen's model line follows the install without a restart or a page reload, the next capture
runs on the new model, and the model card link opens the installed model's card.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request

import pytest

from tests.app.conftest import ROOT
from tests.app.test_e2e_browser import CHROMIUM, server  # noqa: F401 - the running-server fixture
from tests.reliability.bundles import make_keys, model_copy, signed_bundle

pytestmark = pytest.mark.slow


def test_screen_follows_a_model_install_and_links_to_its_card(server, tmp_path):  # noqa: F811
    from playwright.sync_api import expect, sync_playwright

    base, server_tmp = server
    private, trusted = make_keys(tmp_path)
    bundle = signed_bundle(model_copy(tmp_path / "site", "-site"), tmp_path / "site.zip", private)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 800, "height": 480})
            page.goto(base + "/")
            before = page.locator("#model-version").inner_text()
            assert not before.endswith("-site")

            proc = subprocess.run(
                [sys.executable, "-m", "edge_app", "model", "install", str(bundle), "--data-dir", str(server_tmp / "data"),
                 "--trusted-keys", str(trusted)],
                cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
            )
            assert proc.returncode == 0, proc.stderr

            expect(page.locator("#model-version")).to_have_text(before + "-site", timeout=15_000)
            expect(page.locator("#model-fallback")).to_be_hidden()
            page.click("#capture")
            expect(page.locator("#result")).to_have_attribute("data-state", re.compile("benign|malignant"), timeout=15_000)
            with urllib.request.urlopen(base + "/api/screenings?limit=1", timeout=5) as r:
                assert json.load(r)["screenings"][0]["model_version"] == before + "-site"

            page.click("#model-card-link")
            expect(page.locator("#model-card")).to_contain_text("model card", ignore_case=True)
            expect(page.locator("main")).to_contain_text(before + "-site")
        finally:
            browser.close()
