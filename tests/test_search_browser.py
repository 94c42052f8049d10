"""The search page end to end in headless Debian Chromium, driven by Playwright.

Playwright drives the system browser (``/usr/bin/chromium``, installed by ``.ci/run``); it
downloads nothing. The test is skipped where that browser is missing.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
from test_index import searchable_workspace, truth_by_key, variant  # noqa: F401 - fixture

from pairsift.server.app import create_app, running

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect
pytestmark = pytest.mark.skipif(not shutil.which("chromium"), reason="no chromium on PATH")


@pytest.fixture(scope="module")
def browser_and_url(searchable_workspace) -> Iterator:  # noqa: F811 - the imported fixture
    with running(create_app(searchable_workspace)) as url, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser, url
        browser.close()


@pytest.fixture
def page(browser_and_url) -> Iterator:
    """A fresh page on the search app; console errors are collected in ``page.errors``."""
    browser, url = browser_and_url
    tab = browser.new_page()
    tab.errors = []
    tab.on("console", lambda m: m.type == "error" and tab.errors.append(m.text))
    tab.on("pageerror", lambda e: tab.errors.append(str(e)))
    tab.set_default_timeout(30_000)
    tab.goto(url)
    yield tab
    tab.close()


def test_type_a_query_see_the_image_then_its_explain_view(page, demo_corpus):
    truth = truth_by_key(demo_corpus)
    expect(page.locator("#info")).to_contain_text("51 samples")
    page.fill("#query", "a rocket on a launch pad")
    page.click("#text-search")
    first = page.locator("#results .hit").first
    first.wait_for()
    key, uid = first.get_attribute("data-key"), first.get_attribute("data-uid")
    assert truth[key]["photo"] == "rocket"
    assert "rocket" in first.locator(".caption").inner_text()
    assert first.locator(".badge").inner_text() in ("kept", "dropped")
    expect(first.locator("img")).to_have_js_property("complete", True)
    assert first.locator("img").evaluate("img => img.naturalWidth") > 0  # the thumbnail
    first.locator(".explain-link").click()
    page.locator("#explain-uid").wait_for()
    assert page.locator("#explain-uid").inner_text() == uid
    assert "filter-clip-score" in page.locator("#explain").inner_text()
    assert page.locator("#search-view").is_hidden()
    page.click("#back")
    assert page.locator("#results .hit").count() > 0 and page.locator("#explain-view").is_hidden()
    assert page.errors == []


def test_upload_an_image_see_its_duplicate_first(page, demo_corpus, tmp_path):
    truth = truth_by_key(demo_corpus)
    query = tmp_path / "my-moon.jpg"
    query.write_bytes(variant(demo_corpus / "images" / "img_0052.png"))
    page.set_input_files("#image-input", str(query))
    page.click("#image-search")
    expect(page.locator("#status")).to_contain_text("my-moon.jpg")
    first = page.locator("#results .hit").first
    assert truth[first.get_attribute("data-key")]["group"] == "img_0052.png"
    assert "P(same)" in first.locator(".confidence").inner_text()
    assert page.errors == []


def test_filters_and_refusals_show_in_the_page(page):
    page.fill("#query", "a photo")
    page.fill("#k", "60")
    page.select_option("#verdict", "dropped")
    page.click("#text-search")
    expect(page.locator("#status")).to_contain_text("a photo")
    badges = page.locator("#results .hit .badge").all_inner_texts()
    assert badges and set(badges) == {"dropped"}
    reasons = page.locator("#results .reason").all_inner_texts()
    assert {"clip_score_below", "clip_score_missing"} <= set(reasons)
    page.select_option("#reason", "clip_score_below")
    expect(page.locator("#results .reason", has_text="clip_score_missing")).to_have_count(0)
    assert page.locator("#results .hit").count() == reasons.count("clip_score_below")
    page.fill("#k", "100000")
    page.dispatch_event("#k", "change")
    expect(page.locator("#error")).to_contain_text("k must be between 1 and")
    assert all("status of 400" in e for e in page.errors)  # Chromium logs the refused fetch
