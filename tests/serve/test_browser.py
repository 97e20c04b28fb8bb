"""The web page in a real browser: headless Chromium (Debian `chromium` + `chromium-driver`) through Selenium.

Run by `make test-browser`; the screenshot goes to $LASAGNA_BROWSER_ARTIFACTS (default: the test's tmp_path).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx2
import pytest
from live_server import serve_in_thread

from lasagna.serve.app import create_app
from lasagna.serve.describe import model_vocabulary
from lasagna.serve.limits import ServeSettings

pytestmark = pytest.mark.browser

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# Pixels of the drawn view that differ from the plain image drawn the same way: > 0 once masks are overlaid.
CHANGED_PIXELS_JS = """
const canvas = document.getElementById("view");
const shown = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
const plain = new OffscreenCanvas(canvas.width, canvas.height);
const ctx = plain.getContext("2d");
ctx.imageSmoothingEnabled = false;
ctx.drawImage(state.image, 0, 0, canvas.width, canvas.height);
const base = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
let changed = 0;
for (let i = 0; i < base.length; i += 4) if (shown[i] !== base[i] || shown[i + 1] !== base[i + 1]) changed++;
return changed;
"""


@pytest.fixture
def live_server(embedded):
    settings = ServeSettings(vocabulary=model_vocabulary(None))
    yield from serve_in_thread(create_app(embedded, settings))


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1280,900"]:
        options.add_argument(flag)
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    service = webdriver.ChromeService(executable_path=shutil.which("chromedriver") or "/usr/bin/chromedriver")
    driver = webdriver.Chrome(options=options, service=service)
    try:
        yield driver
    finally:
        driver.quit()


def test_page_segments_an_upload_like_the_api(live_server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    classes = [c for c in (EXAMPLES / "shapes-classes.txt").read_text().splitlines() if c.strip()]
    browser.get(live_server + "/")
    # the class-list menu fills from /v1/classlists: the page has talked to the API
    WebDriverWait(browser, 30).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#classlist option")) > 1)
    browser.find_element(By.ID, "file").send_keys(str(EXAMPLES / "shapes.png"))
    WebDriverWait(browser, 30).until(lambda d: d.find_element(By.ID, "run").is_enabled())
    browser.find_element(By.ID, "classes").send_keys(", ".join(classes))
    browser.find_element(By.ID, "run").click()
    WebDriverWait(browser, 120).until(
        lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") != "running"
    )
    body = browser.find_element(By.TAG_NAME, "body")
    assert body.get_attribute("data-state") == "done", browser.find_element(By.ID, "error").text

    shown_present = [li.get_attribute("data-name") for li in browser.find_elements(By.CSS_SELECTOR, "#present li")]
    shown_absent = [li.get_attribute("data-name") for li in browser.find_elements(By.CSS_SELECTOR, "#absent li")]
    with open(EXAMPLES / "shapes.png", "rb") as f:
        files = {"image": ("shapes.png", f.read(), "image/png")}
    api = httpx2.post(live_server + "/v1/segment", files=files, data={"classes": ", ".join(classes)}, timeout=120)
    assert api.status_code == 200, api.text
    expected = api.json()["classes"]
    assert shown_present == [c["name"] for c in expected if c["present"]]
    assert shown_absent == [c["name"] for c in expected if not c["present"]]
    assert shown_present, "the example should show at least one class"

    view = browser.find_element(By.ID, "view")
    assert view.get_attribute("data-masks") == str(len(shown_present))
    drawn = browser.execute_script(CHANGED_PIXELS_JS)
    assert drawn > 100
    out = Path(os.environ.get("LASAGNA_BROWSER_ARTIFACTS", tmp_path))
    out.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(out / "serve-page.png"))
    browser.find_element(By.CSS_SELECTOR, "#present li input[type=checkbox]").click()  # hide the first mask
    assert view.get_attribute("data-masks") == str(len(shown_present) - 1)
    assert browser.execute_script(CHANGED_PIXELS_JS) < drawn
    browser.find_element(By.CSS_SELECTOR, "#present li input[type=checkbox]").click()
