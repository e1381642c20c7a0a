"""A real headless browser for the report's page: Debian's chromium and its driver
(scripts/system-deps.sh installs them), driven with selenium. `page_problems` loads a page and lists
what a reader would see broken: console errors, images that do not decode, tables without
rows."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.system import require

CHROMEDRIVER = "/usr/bin/chromedriver"


def open_browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    require("chromium", "chromedriver")
    opts = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--allow-file-access-from-files"):
        opts.add_argument(arg)
    opts.binary_location = shutil.which("chromium")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


def page_problems(driver, page: Path, tables_expected: int | None = None) -> list[str]:
    """What is broken on `page`; with `tables_expected`, a table missing (or extra) too."""
    driver.get(page.resolve().as_uri())
    problems = [f"console: {e['message']}" for e in driver.get_log("browser")
                if e["level"] == "SEVERE"]
    images = driver.execute_script(
        "return Array.from(document.images).map(i => [i.alt, i.complete && i.naturalWidth > 0])")
    problems += [f"image {alt!r} does not decode" for alt, ok in images if not ok]
    tables = driver.execute_script(
        "return Array.from(document.querySelectorAll('table')).map(t => "
        "t.tBodies.length ? t.tBodies[0].rows.length : 0)")
    problems += [f"table {i} has no rows" for i, n in enumerate(tables) if not n]
    if tables_expected is not None and len(tables) != tables_expected:
        problems.append(f"{len(tables)} tables, {tables_expected} expected")
    return problems
