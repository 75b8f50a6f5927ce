"""Driving Debian's headless Chromium for the page tests (Selenium; no browser is downloaded).

The page's DOM is rebuilt on every refresh, so elements are read with one script call each rather
than held across refreshes. Screenshots go to ``.local/artifacts/``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.wait import WebDriverWait

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).resolve().parents[2] / ".local" / "artifacts"


@contextlib.contextmanager
def chromium(profile: Path, timeout_s: float) -> Iterator[webdriver.Chrome]:
    """Headless Chromium on the fresh profile ``profile``; fails (never skips) when missing."""
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: run `make debs` (chromium, chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (  # the background-networking flags keep it off this machine's closed network
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--window-size=1400,1000",
        f"--user-data-dir={profile}",
    ):  # fmt: skip
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    chrome = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    chrome.set_page_load_timeout(timeout_s)
    chrome.set_script_timeout(timeout_s)
    try:
        yield chrome
    finally:
        chrome.quit()


def attr(driver: webdriver.Chrome, selector: str, name: str) -> str | None:
    """An attribute of the first element matching ``selector`` (None if there is none)."""
    script = (
        "const e = document.querySelector(arguments[0]); return e && e.getAttribute(arguments[1]);"
    )
    value: str | None = driver.execute_script(script, selector, name)
    return value


def text(driver: webdriver.Chrome, selector: str) -> str | None:
    """The rendered text of the first element matching ``selector`` (None if there is none)."""
    script = "const e = document.querySelector(arguments[0]); return e && e.innerText;"
    value: str | None = driver.execute_script(script, selector)
    return value


def count(driver: webdriver.Chrome, selector: str) -> int:
    """How many elements match ``selector``."""
    found: int = driver.execute_script(
        "return document.querySelectorAll(arguments[0]).length;", selector
    )
    return found


def shot(driver: webdriver.Chrome, name: str) -> None:
    """Save a screenshot as .local/artifacts/<name>.png."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def wait_until(
    driver: webdriver.Chrome,
    condition: Callable[[], bool],
    what: str,
    timeout_s: float,
    shot_as: str,
) -> None:
    """Wait at most ``timeout_s`` for ``condition``; fail naming ``what``, saving a screenshot."""
    try:
        WebDriverWait(driver, timeout_s, poll_frequency=0.2).until(lambda _: condition())
    except TimeoutException:
        shot(driver, shot_as)
        pytest.fail(f"the page did not show {what} within {timeout_s} s")


def browser_log(driver: webdriver.Chrome) -> list[dict[str, Any]]:
    """The console entries since the last call (reading them empties the log)."""
    entries: list[dict[str, Any]] = driver.get_log("browser")  # type: ignore[no-untyped-call]  # selenium leaves it unannotated
    return entries


def console_errors(driver: webdriver.Chrome) -> list[str]:
    """Console entries at SEVERE since the last call."""
    return [entry["message"] for entry in browser_log(driver) if entry["level"] == "SEVERE"]
