"""Headless Chromium for the browser tests, driven by Selenium: start it, and ask what a page
requested and where an element sits. The `browser` fixture (tests/conftest.py) uses `chromium()`.

Without selenium, Chromium or chromedriver the browser tests skip, except where
FACTOR4_REQUIRE_BROWSER=1 (CI): there they fail, so they cannot pass by not running.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

INSTALL_HINT = ("run ./scripts/setup.sh --test (installs Debian's chromium and chromium-driver, "
                "and selenium into .venv)")
#: No network of its own: no component updates, no background requests; a sandbox needs privileges
#: a container may not have.
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--window-size=1280,1600")


def find(*candidates: str) -> str | None:
    """The first candidate that is a file (absolute paths) or on PATH (names)."""
    for c in candidates:
        path = Path(c) if c.startswith("/") else None
        if path is not None and path.is_file():
            return str(path)
        found = shutil.which(c) if path is None else None
        if found:
            return found
    return None


def no_browser(reason: str) -> None:
    """Skip, except where a browser is required (CI sets FACTOR4_REQUIRE_BROWSER=1): there a
    missing browser is a failure, so the browser tests cannot pass by not running."""
    if os.environ.get("FACTOR4_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason} (FACTOR4_REQUIRE_BROWSER=1)")
    pytest.skip(reason)


def chromium() -> Any:
    """A started headless Chromium (a Selenium driver) logging its network requests and console;
    the caller quits it."""
    if importlib.util.find_spec("selenium") is None:
        no_browser(f"selenium is not installed: {INSTALL_HINT}")
    binary = find("/usr/bin/chromium", "chromium", "chromium-browser")
    driver_path = find("/usr/bin/chromedriver", "chromedriver")
    if not binary or not driver_path:
        no_browser(f"Chromium and chromedriver are needed for the browser tests: {INSTALL_HINT}")
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in FLAGS:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    try:
        return webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    except WebDriverException as exc:
        no_browser(f"Chromium did not start ({exc.msg}): {INSTALL_HINT}")


def requested_urls(driver: Any) -> list[str]:
    """URLs requested since the last call, from Chromium's network events (reading the log
    empties it)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def rect(driver: Any, element: Any) -> dict[str, float]:
    """The element's box in the viewport, in CSS pixels."""
    return driver.execute_script(
        "const r = arguments[0].getBoundingClientRect();"
        "return {left: r.left, top: r.top, right: r.right, bottom: r.bottom, width: r.width, height: r.height};",
        element)
