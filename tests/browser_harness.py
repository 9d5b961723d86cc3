"""Debian's headless Chromium, driven through its own chromedriver (packages `chromium` and
`chromium-driver`, the same version), for the web page's tests and benchmarks."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
MISSING = (
    "needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver)"
)


@contextmanager
def chromium(profile: Path, *, width: int = 1000, height: int = 900) -> Iterator[webdriver.Chrome]:
    """A fresh headless Chromium with its profile in `profile`; stopped by its pid at the end,
    should quit() fail. Console messages are kept (driver.get_log("browser"))."""
    if CHROMIUM is None or CHROMEDRIVER is None:
        raise RuntimeError(MISSING)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root, where Chromium's sandbox cannot start
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--window-size={width},{height}",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(CHROMEDRIVER)
    driver = webdriver.Chrome(service=service, options=options)
    try:
        yield driver
    finally:
        driver.quit()
        if service.process is not None and psutil.pid_exists(service.process.pid):
            psutil.Process(service.process.pid).kill()
