"""The static site in a real headless browser (Debian's chromium + chromedriver, driven by
selenium): pages load from file:// without console errors, the search box and the task filter
filter the list, every internal link resolves to a page and an anchor, and a screenshot of the
index is kept (under pytest's tmp dir and, with ZOO_ARTEFACTS set, there).

Without a browser this test FAILS (CI installs one in .ci/run); ZOO_NO_BROWSER=1 skips it."""

import os
import shutil
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlparse

import pytest

from conftest import run_zoo

pytestmark = pytest.mark.slow

BROWSERS = ("chromium", "chromium-headless-shell", "chromium-browser", "google-chrome")


def _driver():
    """A headless chromium under selenium, or a failure naming what is missing."""
    if os.environ.get("ZOO_NO_BROWSER") == "1":
        pytest.skip("ZOO_NO_BROWSER=1: the headless-browser test is switched off")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("selenium is not installed (pip install -e '.[dev]'); set ZOO_NO_BROWSER=1 to skip")
    binary = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    driver_path = shutil.which("chromedriver")
    if not binary or not driver_path:
        pytest.fail("no headless browser: install Debian's chromium and chromium-driver (.ci/run does); "
                    "set ZOO_NO_BROWSER=1 to skip")
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,1000", "--allow-file-access-from-files"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # an explicit driver path: selenium must not try to download one
    return webdriver.Chrome(service=Service(executable_path=driver_path), options=opts)


def _severe(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


def _visible_rows(driver):
    from selenium.webdriver.common.by import By
    return [r for r in driver.find_elements(By.CSS_SELECTOR, "#models tbody tr") if r.is_displayed()]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("browser") / "site"
    done = run_zoo("site", "build", str(out))
    assert done.returncode == 0, done.stderr
    return out


@pytest.fixture(scope="module")
def browser():
    driver = _driver()
    yield driver
    driver.quit()


def test_index_loads_searches_and_filters(site, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.get((site / "index.html").as_uri())
    assert browser.title and "zoo" in browser.title.lower()
    assert _severe(browser) == []
    total = len(_visible_rows(browser))
    import zoo.registry as reg
    models = reg.load_registry().models
    assert total == len(models)

    # a screenshot of the index as it first appears: a test artefact
    shot = tmp_path / "site-index.png"
    assert browser.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    if os.environ.get("ZOO_ARTEFACTS"):
        dest = Path(os.environ["ZOO_ARTEFACTS"])
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, dest / "site-index.png")

    # typing in the search box filters the list as you type
    box = browser.find_element(By.ID, "q")
    box.send_keys("deeponet")
    rows = _visible_rows(browser)
    assert 0 < len(rows) < total
    assert all("deeponet" in r.get_attribute("data-search") for r in rows)
    want = [n for n, e in models.items() if "deeponet" in (n + " " + e.description).lower()]
    assert {r.find_element(By.TAG_NAME, "code").text for r in rows} >= set(want)
    assert browser.find_element(By.ID, "count").text == str(len(rows))
    box.send_keys("-no-such-model-xyz")
    assert _visible_rows(browser) == [] and browser.find_element(By.ID, "count").text == "0"
    box.clear()
    box.send_keys(" ")   # clear() does not fire `input`; an edit does
    box.send_keys("\b")

    # the task filter keeps only that task's models
    Select(browser.find_element(By.ID, "task")).select_by_value("pinn")
    rows = _visible_rows(browser)
    assert rows and len(rows) == sum(e.task == "pinn" for e in models.values())
    assert all(r.get_attribute("data-task") == "pinn" for r in rows)
    assert _severe(browser) == []

    # a click on a family link navigates to its page
    rows[0].find_element(By.CSS_SELECTOR, "td:nth-child(2) a").click()
    assert browser.current_url.endswith("families/pinn.html") or "/families/" in browser.current_url
    assert browser.find_element(By.TAG_NAME, "h1").text
    assert _severe(browser) == []


def _crawl(browser, site: Path) -> tuple[dict, list, list[str]]:
    """Follow every internal link from the index in the browser: ({page: its ids}, links,
    problems) where a problem is a page that is missing, does not render or logs a console error,
    or a link whose page or anchor is not there."""
    from selenium.webdriver.common.by import By

    todo, pages, links, problems = [(site / "index.html").as_uri()], {}, [], []
    while todo:
        url = todo.pop()
        if url in pages:
            continue
        pages[url] = set()
        if not Path(unquote(urlparse(url).path)).is_file():
            problems.append(f"missing page {url}")
            continue
        browser.get(url)
        if not browser.find_elements(By.TAG_NAME, "h1"):
            problems.append(f"{url} did not render")
        problems += [f"{url}: console: {m}" for m in _severe(browser)]
        pages[url] = set(browser.execute_script("return [...document.querySelectorAll('[id]')].map(e => e.id)"))
        for href in browser.execute_script("return [...document.querySelectorAll('a[href]')].map(a => a.href)"):
            if not href.startswith("file:"):
                continue   # external links (arXiv, code) are not followed
            page, frag = urldefrag(href)
            links.append((url, page, frag))
            todo.append(page)
    problems += [f"{src} -> {page}#{frag}" for src, page, frag in links
                 if frag and unquote(frag) not in pages.get(page, set())]
    return pages, links, problems


def test_every_internal_link_resolves_in_the_browser(site, browser):
    """Every page loads without console errors; every link's page loads and holds its anchor."""
    pages, links, problems = _crawl(browser, site)
    assert len(pages) >= 2 and len(links) > len(pages)
    assert problems == []


def test_the_crawl_catches_a_broken_link_and_a_script_error(site, browser, tmp_path):
    bad = tmp_path / "site"
    shutil.copytree(site, bad)
    page = bad / "families" / "deeponet.html"
    page.write_text(page.read_text().replace(
        "</body>", '<a href="gone.html">x</a><a href="../index.html#nope">y</a>'
                   '<script>undefinedFunction()</script></body>'))
    _, _, problems = _crawl(browser, bad)
    assert any("missing page" in p and "gone.html" in p for p in problems), problems
    assert any(p.endswith("#nope") for p in problems), problems
    assert any("console" in p and "undefinedFunction" in p for p in problems), problems
