"""Screenshot a trace page (``retrodraft trace --out PAGE``) in headless Chromium, whole page.

    python benchmarks/trace_screenshot.py benchmarks/results/trace/trace.html \
        benchmarks/results/trace/trace.png --hover lookup:12

Uses Debian's chromium and chromedriver (``make browser``) through Selenium, as
tests/test_trace_browser.py does. ``--hover SOURCE:N`` rests the mouse on the N-th token drafted
by SOURCE first, so the picture shows the tooltip and the step's tokens lit up.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("page", help="the trace HTML file")
    ap.add_argument("out", help="PNG to write")
    ap.add_argument("--width", type=int, default=1100, help="viewport width in CSS pixels (default: %(default)s)")
    ap.add_argument("--hover", default=None, help="SOURCE:N: hover the N-th token of that source (0-based)")
    args = ap.parse_args()

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    chromium, driver_path = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")
    if not chromium or not driver_path:
        print("no chromium / chromedriver on PATH: run `make browser`", file=sys.stderr)
        return 2
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
              f"--window-size={args.width},900", "--force-device-scale-factor=1"):
        opts.add_argument(a)
    os.environ.setdefault("SE_OFFLINE", "true")
    driver = webdriver.Chrome(service=Service(driver_path), options=opts)
    try:
        driver.get(Path(args.page).resolve().as_uri())
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": args.width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        if args.hover:
            source, _, n = args.hover.rpartition(":")
            tokens = driver.find_elements(By.CSS_SELECTOR, f'span.t[data-src="{source}"]')
            ActionChains(driver).move_to_element(tokens[int(n)]).perform()
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(args.out)
    finally:
        driver.quit()
    print(f"{args.out}: {args.width}x{height}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
