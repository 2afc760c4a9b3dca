"""Fixtures for the dashboard's browser tests: a real headless Chromium driven by Selenium, and
a place for screenshots (dashboard_support.py serves the dashboard itself).

Chromium and its driver are the system's (Debian ``chromium`` and ``chromium-driver``, installed
by deploy/dev.sh); Selenium is told where both are, so it never tries to download a browser.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service

#: Where the tests also save their screenshots, when set (docs/dashboard/ is made this way).
SCREENSHOTS_ENV = "AMA_DASHBOARD_SCREENSHOTS"


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    """One headless Chromium per test module (starting one costs a second or two)."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if binary is None or driver_path is None:
        pytest.fail("chromium and chromedriver are needed (deploy/dev.sh setup installs them)")
    options = Options()
    options.binary_location = binary
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1440,1000",
        "--force-device-scale-factor=1",
        "--lang=en-GB",
    ):
        options.add_argument(arg)  # fmt: skip
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def screenshot(tmp_path_factory: pytest.TempPathFactory) -> Callable[[webdriver.Chrome, str], Path]:
    """Save the browser's view as ``NAME.png`` (in a temporary folder, and in the folder named
    by ``AMA_DASHBOARD_SCREENSHOTS`` if set)."""
    folder = tmp_path_factory.mktemp("screens")
    extra = os.environ.get(SCREENSHOTS_ENV)

    def save(driver: webdriver.Chrome, name: str) -> Path:
        path = folder / f"{name}.png"
        assert driver.save_screenshot(str(path)), f"screenshot {name} failed"
        if extra:
            Path(extra).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, Path(extra) / path.name)
        return path

    return save
