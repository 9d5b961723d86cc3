"""The web page in a real browser: Debian's headless Chromium, driven through its chromedriver,
against the real daemon. The dashboard's progress bar moves without a reload, the live preview
shows, the gallery shows the before/after pair, a photo named like markup runs no script, and
the page's own script is not blocked by its Content-Security-Policy.

Chromium and chromedriver come from Debian's `chromium` and `chromium-driver` packages (.ci/run
installs them); without them these tests are skipped, unless STYLEBOX_REQUIRE_BROWSER=1 (CI)
makes that a failure.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser_harness import CHROMEDRIVER, CHROMIUM, MISSING, chromium
from daemon_harness import (
    Daemons,
    drop,
    journal_rows,
    photo_bytes,
    tiny_preset,
    wait_for,
    write_config,
)
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait

from daemon.config import load_config

XSS_NAME = "<img src=x onerror=alert(1)>.jpg"
# About 10 s a photo on 2 cores: the dashboard sees it running across several of its refreshes.
SLOW = tiny_preset(size=96, steps=300, finish="fine")
LOOK_SECONDS = 30


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    if CHROMIUM is None or CHROMEDRIVER is None:
        if os.environ.get("STYLEBOX_REQUIRE_BROWSER") == "1":
            pytest.fail(MISSING)
        pytest.skip(MISSING)
    with chromium(tmp_path / "chromium-profile") as driver:
        yield driver


@pytest.fixture
def daemons() -> Iterator[Daemons]:
    started = Daemons()
    yield started
    started.close()


def _loaded(driver: webdriver.Chrome, selector: str) -> int:
    """How many images matching `selector` the browser has loaded and decoded."""
    return driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])]"
        ".filter(i => i.complete && i.naturalWidth > 0).length",
        selector,
    )


def test_the_dashboard_moves_live_and_the_gallery_shows_before_and_after(
    tmp_path: Path, daemons: Daemons, browser: webdriver.Chrome
) -> None:
    config = write_config(tmp_path, presets={"swirl": SLOW})
    drop(tmp_path / "inbox" / XSS_NAME, photo_bytes(0, size=(96, 72)))
    drop(tmp_path / "inbox" / "second.jpg", photo_bytes(1, size=(96, 72)))
    daemon = daemons.start(config)
    url = daemon.web_url()
    browser.get(url + "/")
    browser.execute_script("window.sameDocument = true")  # gone if the page reloads
    wait = WebDriverWait(browser, LOOK_SECONDS, poll_frequency=0.2)

    def progress() -> tuple[str, int] | None:
        found = browser.execute_script(
            "const p = document.querySelector('article.job progress[value]');"
            "return p && [p.closest('article').dataset.job, p.value]"
        )
        return (found[0], int(found[1])) if found else None

    first = wait.until(lambda _: progress(), "a running job's progress bar")
    assert XSS_NAME in browser.find_element(By.TAG_NAME, "main").text  # running or queued
    wait.until(
        lambda _: (now := progress()) is not None and now[0] == first[0] and now[1] > first[1],
        "the same job's bar to advance",
    )
    wait.until(lambda _: _loaded(browser, "img.preview"), "the live preview")
    assert browser.execute_script("return window.sameDocument") is True
    browser.save_screenshot(str(tmp_path / "dashboard.png"))

    # The gallery shows a card's "before" once its original is put away and noted: a page
    # loaded between the result and that (a moment, longer on a busy machine) shows the result
    # alone and would never get its pair.
    journal = load_config(config).journal_path

    def painted_and_put_away() -> int:
        rows = journal_rows(journal)
        return sum(r["state"] == "done" and '"original"' in (r["details"] or "") for r in rows)

    wait_for(
        lambda: painted_and_put_away() == 2,
        "both results, their originals put away",
        daemon=daemon,
        timeout=120,
    )
    assert len(list((tmp_path / "outbox" / "swirl").glob("*.jpg"))) == 2
    browser.get(url + "/gallery")
    wait.until(lambda _: _loaded(browser, ".card img") == 4, "two before/after pairs")
    cards = browser.find_elements(By.CSS_SELECTOR, ".card")
    (marked,) = [card for card in cards if XSS_NAME in card.text]  # the name, as text
    assert len(marked.find_elements(By.TAG_NAME, "img")) == 2
    assert browser.find_elements(By.CSS_SELECTOR, "img[src='x']") == []
    assert expected_conditions.alert_is_present()(browser) is False  # alert(1) never ran
    browser.save_screenshot(str(tmp_path / "gallery.png"))

    # No script or style refused by the CSP, no failed request (but a preview may be gone
    # between a refresh and its fetch, when its job has just ended).
    severe = [
        entry
        for entry in browser.get_log("browser")
        if entry["level"] == "SEVERE" and "/previews/" not in entry["message"]
    ]
    assert severe == []
