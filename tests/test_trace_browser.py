"""The trace page in a real headless Chromium (Debian's chromium + chromium-driver, via Selenium).

`make browser` installs both; without them the test is skipped, except under CI where it fails
(CI must run it).
"""

import os
import shutil

import pytest

from test_trace import Words, _generate, _traced

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[test]')")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
DRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None or DRIVER is None:
        reason = "no chromium / chromedriver on PATH: run `make browser` (apt-get install chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1100,1000", "--hide-scrollbars", "--force-device-scale-factor=1"):
        opts.add_argument(arg)
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager look for a download
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    a = _traced()
    _generate(a)
    path = tmp_path_factory.mktemp("trace") / "trace.html"
    path.write_text(a.trace.to_html(Words()), encoding="utf-8")
    return a, path


def test_trace_page_in_chromium(browser, page, tmp_path):
    a, path = page
    trace, sources = a.trace, a.trace.sources()
    browser.get(path.as_uri())
    assert browser.title == "retrodraft trace"

    # the legend: one key per source that occurs (and every drafter), with its token count
    keys = browser.find_elements(By.CSS_SELECTOR, "#legend .key")
    shown = {k.get_attribute("data-src"): int(k.find_element(By.TAG_NAME, "b").text) for k in keys}
    assert shown == {c: sum(s.source == c for s in sources) for c in {s.source for s in sources} | {"oracle", "random"}}

    # one coloured span per generated token; one colour per source, a different one for each
    spans = browser.find_elements(By.CSS_SELECTOR, "pre.out span.t")
    assert len(spans) == a.stats.new_tokens == len(sources)
    colours: dict[str, set[str]] = {}
    for el, s in zip(spans, sources):
        assert el.get_attribute("data-src") == s.source
        colours.setdefault(s.source, set()).add(el.value_of_css_property("background-color"))
    assert all(len(c) == 1 for c in colours.values())
    assert len({next(iter(c)) for c in colours.values()}) == len(colours)

    # hovering a drafted token shows its step and tree size, and lights up the tokens of its step
    tip = browser.find_element(By.ID, "tip")
    assert not tip.is_displayed()
    k = next(i for i, s in enumerate(sources) if s.source == "oracle")
    step = trace.steps[sources[k].step]
    ActionChains(browser).move_to_element(spans[k]).perform()
    assert tip.is_displayed()
    assert f"step {sources[k].step + 1} of {len(trace.steps)}" in tip.text
    assert f"tree {step.tree_size} nodes" in tip.text and "drafted by oracle" in tip.text
    lit = browser.find_elements(By.CSS_SELECTOR, "pre.out span.t.hl")
    assert len(lit) == len(step.committed)

    # the chart: one bar group per step, its height the tree size, one segment per committed token
    bars = browser.find_elements(By.CSS_SELECTOR, "svg#chart g.step")
    assert len(bars) == a.stats.steps
    assert [int(b.get_attribute("data-tree")) for b in bars] == a.stats.tree_sizes
    heights = [float(b.find_element(By.CSS_SELECTOR, "rect.size").get_attribute("height")) for b in bars]
    top = max(a.stats.tree_sizes)
    assert heights[a.stats.tree_sizes.index(top)] == pytest.approx(max(heights))
    assert [len(b.find_elements(By.CSS_SELECTOR, "rect.seg")) for b in bars] == a.stats.committed
    ActionChains(browser).move_to_element(bars[-1]).perform()
    assert f"step {len(bars)} of {len(bars)}" in tip.text

    # a legend key hides its source's colour
    for name in ("oracle", "random"):
        browser.find_element(By.CSS_SELECTOR, f'#legend .key[data-src="{name}"]').click()
    dimmed = browser.find_elements(By.CSS_SELECTOR, "pre.out span.t.dim")
    assert len(dimmed) == sum(s.source in ("oracle", "random") for s in sources)

    shot = tmp_path / "trace.png"
    assert browser.save_screenshot(str(shot))
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
