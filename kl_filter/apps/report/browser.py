"""Open a report in headless Chromium: say what went wrong, take a screenshot.

Uses Selenium with the system's Chromium and ChromeDriver (Debian: ``apt-get install chromium
chromium-driver``; paths from ``$CHROMIUM`` / ``$CHROMEDRIVER`` or the PATH). Nothing is downloaded: Selenium
Manager is kept offline. Chromium runs with the flags a closed network needs (no background networking, no
component updates, no sync) and a fresh profile directory.

:func:`check_page` returns ``{"errors": [...], "images": n, "broken_images": [...], "title": ...}``: every
browser-console message of level SEVERE (a failed resource, a script error) and every ``<img>`` that did not
decode. :func:`find_browser` tells whether a browser is there at all.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import tempfile

from kl_filter.core.errors import KLFilterError, MissingDependency

FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars"]
MAX_HEIGHT = 16000  # Chromium's largest screenshot surface is about 16k pixels


def find_browser() -> tuple[str, str] | None:
    """``(chromium, chromedriver)`` paths, or None."""
    chromium = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    driver = os.environ.get("CHROMEDRIVER") or shutil.which("chromedriver")
    return (chromium, driver) if chromium and driver else None


def check_page(index_html: str, screenshot: str | None = None, width: int = 1280, height: int | None = None) -> dict:
    """Load ``index_html`` (a file path); screenshot the page (``height`` pixels, default: all of it)."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as e:
        raise MissingDependency("the browser check needs selenium: pip install 'kl-filter[report]'") from e
    found = find_browser()
    if not found:
        raise KLFilterError("no Chromium/ChromeDriver found (Debian: apt-get install chromium chromium-driver)")
    if not os.path.exists(index_html):
        raise KLFilterError("no such page", index_html)
    os.environ.setdefault("SE_OFFLINE", "true")
    profile = tempfile.mkdtemp(prefix="kl-filter-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = found[0]
    for f in FLAGS + [f"--user-data-dir={profile}", f"--window-size={width},1000"]:
        opts.add_argument(f)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(found[1]), options=opts)
    try:
        driver.get(pathlib.Path(os.path.abspath(index_html)).as_uri())
        state = driver.execute_script(
            "return {ready: document.readyState, title: document.title, height: document.documentElement.scrollHeight,"
            " images: Array.from(document.images).map(i => [i.getAttribute('src'), i.complete && i.naturalWidth > 0])}")
        errors = [e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
        if screenshot:
            h = min(MAX_HEIGHT, height or state["height"])
            driver.set_window_size(width, h)
            os.makedirs(os.path.dirname(os.path.abspath(screenshot)), exist_ok=True)
            driver.save_screenshot(screenshot)
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
    return {"ready": state["ready"], "title": state["title"], "page_height": state["height"], "errors": errors,
            "images": len(state["images"]), "broken_images": [s for s, ok in state["images"] if not ok]}
