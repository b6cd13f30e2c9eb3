"""Open a report in headless Chromium, wait until every figure is drawn, save a PNG.

    python -m dashboards.screenshot report.html report.png

Uses the system's Chromium (Debian: ``apt-get install -y chromium``) through playwright; playwright's own
browser download is not needed. The tests and the benchmark launch the browser with the same code.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

DEFAULT_CHROMIUM = "/usr/bin/chromium"  # Debian's package
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
INSTALL_HINT = ("headless Chromium not found; install it with `apt-get update && apt-get install -y chromium` "
                "(Debian/Ubuntu) or set CHROMIUM=/path/to/chromium")

# True once every plotly graph on the page has its SVG root (plotly draws it as the last step of newPlot).
ALL_PLOTS_DRAWN = """() => {
  const plots = [...document.querySelectorAll('.plotly-graph-div')];
  return plots.length > 0 && plots.every(p => p.querySelector('.main-svg'));
}"""


class BrowserMissingError(RuntimeError):
    """No Chromium executable: the message says how to install one."""


def chromium_path() -> str:
    """The Chromium executable: ``$CHROMIUM``, else /usr/bin/chromium, else ``chromium`` on PATH."""
    candidates = [os.environ.get("CHROMIUM"), DEFAULT_CHROMIUM, shutil.which("chromium"),
                  shutil.which("chromium-browser")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise BrowserMissingError(INSTALL_HINT)


@contextmanager
def chromium() -> Iterator:
    """A playwright Browser on the system Chromium, closed on exit."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise SystemExit("python -m dashboards.screenshot needs playwright, in the project's `screenshot` extra: "
                         "pip install -e \".[screenshot]\"") from None

    executable = chromium_path()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=LAUNCH_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def wait_for_plots(page, timeout_ms: int = 60_000) -> int:
    """Block until every plotly graph on the page is drawn; returns how many there are."""
    page.wait_for_function(ALL_PLOTS_DRAWN, timeout=timeout_ms)
    return page.evaluate("() => document.querySelectorAll('.plotly-graph-div').length")


def open_report(browser, report: str | Path, width: int = 1280, height: int = 900, timeout_ms: int = 60_000):
    """A new page showing ``report`` with all plots drawn; returns (page, seconds until drawn)."""
    page = browser.new_page(viewport={"width": width, "height": height})
    start = time.perf_counter()
    page.goto(Path(report).resolve().as_uri(), wait_until="load", timeout=timeout_ms)
    wait_for_plots(page, timeout_ms)
    return page, time.perf_counter() - start


def screenshot(report: str | Path, png: str | Path, width: int = 1280) -> float:
    """Save a full-page PNG of ``report``; returns the seconds from navigation until all plots were drawn."""
    with chromium() as browser:
        page, seconds = open_report(browser, report, width=width)
        page.screenshot(path=str(png), full_page=True)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dashboards.screenshot", description=__doc__.splitlines()[0])
    parser.add_argument("report", help="the report's HTML file")
    parser.add_argument("png", help="where to write the screenshot")
    parser.add_argument("--width", type=int, default=1280, help="viewport width in pixels (default 1280)")
    args = parser.parse_args(argv)
    try:
        seconds = screenshot(args.report, args.png, args.width)
    except BrowserMissingError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.png} (plots drawn in {seconds:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
