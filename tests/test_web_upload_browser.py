"""Sending a photo from the page in a real browser: Debian's headless Chromium, driven through its
chromedriver, against the real daemon. After the token login, a file chosen in the dashboard's
upload panel with a preset picked by its painting goes to /api/v1/photos, its bar fills, its job
is followed until painted; the result shows in the gallery, whose before/after view has a slider
that moves the cut between photo and result. A screenshot of that view is taken; with
STYLEBOX_SCREENSHOTS=bench/results it is kept there (the committed one), else in the test's
temporary folder, so a test run leaves the checkout as it was.

Without chromium and chromium-driver these tests are skipped, unless STYLEBOX_REQUIRE_BROWSER=1
(CI) makes that a failure.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser_harness import CHROMEDRIVER, CHROMIUM, MISSING, chromium
from daemon_harness import Daemons, photo_bytes, write_config
from selenium import webdriver
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.wait import WebDriverWait

TOKEN = "test-token-0123456789abcdef"
LOOK_SECONDS = 60
SCREENSHOT_NAME = "web_upload_before_after.png"


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    if CHROMIUM is None or CHROMEDRIVER is None:
        if os.environ.get("STYLEBOX_REQUIRE_BROWSER") == "1":
            pytest.fail(MISSING)
        pytest.skip(MISSING)
    with chromium(tmp_path / "chromium-profile", width=900, height=1000) as driver:
        yield driver


def _loaded(driver: webdriver.Chrome, selector: str) -> int:
    """How many images matching `selector` the browser has loaded and decoded."""
    return driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])]"
        ".filter(i => i.complete && i.naturalWidth > 0).length",
        selector,
    )


def _errors(driver: webdriver.Chrome) -> list[str]:
    """The console's errors (a script or style the Content-Security-Policy blocked, say)."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def test_a_photo_chosen_in_the_upload_panel_becomes_a_result_with_a_moving_slider(
    tmp_path: Path, daemons: Daemons, browser: webdriver.Chrome
) -> None:
    (tmp_path / "token").write_text(TOKEN + "\n")
    web = {"listen": "127.0.0.1:0", "token_file": str(tmp_path / "token")}
    daemon = daemons.start(write_config(tmp_path, web=web, originals={"policy": "move"}))
    url = daemon.web_url()
    daemon.wait_ready()
    photo = tmp_path / "portrait.jpg"
    photo.write_bytes(photo_bytes(0, size=(160, 120)))
    wait = WebDriverWait(browser, LOOK_SECONDS, poll_frequency=0.2)

    browser.get(url + "/")
    assert "Log in" in browser.find_element(By.ID, "upload").text  # no panel before the login
    browser.get(url + "/login")
    browser.find_element(By.NAME, "token").send_keys(TOKEN)
    browser.find_element(By.CSS_SELECTOR, "form.login button").click()
    wait.until(lambda d: d.find_elements(By.ID, "upload-files"), "the upload panel")
    # the preset picker shows each preset's painting; pick glass by its picture
    wait.until(lambda d: _loaded(d, ".picker img") == 2, "the paintings' thumbnails")
    browser.find_element(By.CSS_SELECTOR, "input[name=preset][value=glass]").find_element(
        By.XPATH, ".."
    ).click()
    browser.find_element(By.ID, "upload-files").send_keys(str(photo))

    item = "#upload-list li"
    wait.until(
        lambda d: "portrait.jpg → glass" in d.find_element(By.CSS_SELECTOR, item).text,
        "the file in the list with its preset",
    )
    wait.until(
        lambda d: d.execute_script(
            "const p = document.querySelector(arguments[0] + ' progress');"
            "return p && p.value === p.max && p.max > 0",
            item,
        ),
        "its bar full",
    )
    wait.until(
        lambda d: _loaded(d, item + ".done img") == 1,
        "painted, with its result's thumbnail",
    )
    assert (tmp_path / "outbox" / "glass" / "portrait.jpg").is_file()

    browser.get(url + "/gallery")
    wait.until(lambda d: _loaded(d, ".card img") == 2, "the gallery's before and after")
    browser.find_element(By.CSS_SELECTOR, ".card a[href^='/view/']").click()
    wait.until(lambda d: _loaded(d, "#compare img") == 2, "the full view's photo and result")

    def cut() -> str:
        return browser.execute_script(
            "return document.getElementById('compare-before').style.clipPath"
        )

    assert cut() == "inset(0px 50% 0px 0px)"
    slider = browser.find_element(By.ID, "compare-slider")
    width = slider.size["width"]
    ActionChains(browser).click_and_hold(slider).move_by_offset(-width // 4, 0).release().perform()
    wait.until(lambda _: cut() != "inset(0px 50% 0px 0px)", "the cut to move with the slider")
    shown = int(slider.get_attribute("value"))
    assert 10 <= shown <= 40 and cut() == f"inset(0px {100 - shown}% 0px 0px)"
    download = browser.find_element(By.ID, "download")
    assert download.get_attribute("download") is not None
    assert download.get_attribute("href").endswith("/result")
    assert _errors(browser) == []
    screenshot = Path(os.environ.get("STYLEBOX_SCREENSHOTS") or tmp_path) / SCREENSHOT_NAME
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(screenshot))
