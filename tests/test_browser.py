"""The demo storefront (/demo) and the merchant dashboard (/dashboard) in a real browser (Debian's
chromium driven by Playwright) against a real `minirec serve` process with a trained app: the pages
render the API's answers, the storefront's events reach the analytics, and no page has a JS error.

Screenshots go to a temporary folder (printed); the README's copies in docs/screenshots/ are written
only when UPDATE_SCREENSHOTS=1, so a test run never changes the repository.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest

from tests.browser_fixtures import H, Shop, build_shop, drive_traffic, start_shop
from tests.serving_fixtures import ADMIN_KEY, APP_KEY, OTHER_KEY

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
DOC_SHOTS = Path(__file__).resolve().parents[1] / "docs" / "screenshots"
PHONE = {"width": 420, "height": 900}
DESKTOP = {"width": 1280, "height": 900}
WAIT_MS = 15_000


def require_chromium() -> None:
    """Skip without the system chromium (fail in CI, where `make test` installs it)."""
    if CHROMIUM.exists():
        return
    message = (f"{CHROMIUM} is missing: `make test` installs it (apt-get install -y chromium); "
               "the browser tests never download a browser")
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> Iterator[Shop]:
    require_chromium()
    root = build_shop(tmp_path_factory.mktemp("browser-shop"))
    shop = start_shop(root, tmp_path_factory.mktemp("browser-serve"))
    try:
        yield shop
    finally:
        shop.server.stop()


@pytest.fixture(scope="module")
def browser(shop) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


class Tab:
    """A fresh browser context (own localStorage) with one page that records JS and console errors."""

    def __init__(self, browser: Any, viewport: dict[str, int]) -> None:
        self.context = browser.new_context(viewport=viewport)
        self.context.set_default_timeout(WAIT_MS)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        self.page.on("console", lambda msg: msg.type == "error" and self.errors.append(f"console: {msg.text}"))

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def phone(browser) -> Iterator[Tab]:
    tab = Tab(browser, PHONE)
    yield tab
    tab.close()


@pytest.fixture
def desktop(browser) -> Iterator[Tab]:
    tab = Tab(browser, DESKTOP)
    yield tab
    tab.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    """The folder this run's screenshots go to (temporary)."""
    folder = tmp_path_factory.mktemp("screenshots")
    print(f"\nscreenshots: {folder}")
    return folder


def screenshot(page: Any, name: str, shots: Path) -> None:
    """A screenshot into `shots`; copied over the README's one only when UPDATE_SCREENSHOTS=1."""
    path = shots / f"{name}.png"
    page.screenshot(path=str(path))
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        DOC_SHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOC_SHOTS / path.name)


def demo_url(shop: Shop, **extra: str) -> str:
    query = {"app": "shop", "key": APP_KEY, "known": shop.known, "newcomer": shop.newcomer, **extra}
    return f"{shop.base_url}/demo?{urlencode(query)}"


def wait_view(page: Any, view: str, shelf: str) -> list[str]:
    """Wait until `view` has rendered with cards in `shelf`; returns their item ids in order."""
    page.wait_for_selector(f'#view[data-view="{view}"][data-ready="1"] .{shelf} .card')
    return page.locator(f"#view .{shelf} .card").evaluate_all("cards => cards.map(c => c.dataset.itemId)")


def strategy(page: Any, shelf: str) -> str:
    return page.locator(f"#view .{shelf}").get_attribute("data-strategy")


def hash_view(url: str) -> str:
    """The storefront view a URL shows (`#/results?q=…` → results; no hash → home)."""
    name = urlsplit(url).fragment.strip("/").split("?")[0].split("/")[0]
    return name or "home"


def switch_user(page: Any, preset: str) -> list[str]:
    """Pick a preset in the user switcher; returns the new home feed once it has rendered."""
    before = page.locator("#view .feed").get_attribute("data-request-id")
    page.locator("#user-preset").select_option(preset)
    page.wait_for_selector(f'#view[data-view="home"][data-ready="1"] .feed:not([data-request-id="{before}"]) .card')
    return wait_view(page, "home", "feed")


def events_settled(page: Any) -> int:
    """Wait until every event batch the page sent has been answered; returns the events accepted."""
    page.wait_for_selector('#event-count[data-pending="0"]')
    return int(page.locator("#event-count").inner_text())


def analytics(shop: Shop) -> dict[str, Any]:
    status, doc = shop.server.request("GET", "/v1/apps/shop/analytics", headers=H)
    assert status == 200, doc
    return doc


def test_storefront_feed_search_item_and_events_reach_the_analytics(shop, phone, shots):
    page = phone.page
    page.goto(demo_url(shop))
    home = wait_view(page, "home", "feed")
    assert len(home) >= 10
    reasons = page.locator("#view .feed .card .reason").all_inner_texts()
    assert all(r.strip() for r in reasons), "every item shows its reason"
    feed_debug = page.locator("#view .feed .debug-line").inner_text()
    assert "experiment home-feed/personalized" in feed_debug
    page.wait_for_selector("#q[data-request-id]")  # the shading word arrived
    assert page.locator("#q").get_attribute("placeholder") not in ("", "搜索商品 Search")
    screenshot(page, "storefront-home", shots)

    # Chinese: suggestions, then a suggestion's results
    page.locator("#q").click()
    page.wait_for_selector('#view[data-view="search"][data-ready="1"] .hot li')
    assert page.locator("#view .discover .chip").count() > 0
    page.locator("#q").press_sequentially("手机", delay=30)
    page.wait_for_selector('#suggestions:not([hidden])[data-prefix="手机"] .suggestion')
    page.locator("#suggestions .suggestion", has_text="手机").first.click()
    results = wait_view(page, "results", "results")
    leaves = page.locator("#view .results .card .thumb").all_inner_texts()
    assert leaves[:5].count("手机") >= 3, leaves

    # pinyin: suggestions read `shouji` as 手机, and so does the search itself
    page.locator("#q").fill("")
    page.locator("#q").press_sequentially("shouji", delay=30)
    page.wait_for_selector('#suggestions:not([hidden])[data-prefix="shouji"] .suggestion')
    assert any("手机" in s for s in page.locator("#suggestions .suggestion").all_inner_texts())
    page.locator("#q").press("Enter")
    page.wait_for_selector('#view[data-view="results"][data-ready="1"] .interpreted')
    assert "手机" in page.locator("#view .interpreted").first.inner_text()
    results = wait_view(page, "results", "results")
    screenshot(page, "storefront-search", shots)

    # the item page: its related shelf is not the home feed; buy it
    clicked = results[0]
    page.locator(f'#view .results .card[data-item-id="{clicked}"]').click()
    related = wait_view(page, "item", "related")
    assert clicked not in related
    assert related != home[:len(related)] and set(related) != set(home)
    assert strategy(page, "related").startswith("related")
    screenshot(page, "storefront-item", shots)
    page.locator("#view .buy").click()
    page.wait_for_selector("#view .buy:has-text('Bought')")

    # back to the home page: the feed has taken the click and the purchase in
    for _ in range(8):  # item → results → search → results → search → home, as a user taps back
        page.go_back()
        view = hash_view(page.url)
        page.wait_for_selector(f'#view[data-view="{view}"]')
        if view == "home":
            break
    after = wait_view(page, "home", "feed")
    debug = page.locator("#view .feed .debug-line").inner_text()
    assert "recent" in strategy(page, "feed"), f"the session's events are folded in: {debug}"
    assert after != home, f"the next home feed reflects the session's events: {debug}"
    assert clicked not in after, "a bought item leaves the feed"

    # the events reached the durable log and the analytics (impressions, clicks, purchase, searches)
    sent = events_settled(page)
    assert sent > len(home)
    doc = analytics(shop)  # acknowledged batches are in the durable log already
    by_type = doc["events"]["by_type"]
    assert doc["events"]["total"] == sent
    assert by_type.get("click") == 1 and by_type.get("purchase") == 1 and by_type.get("search") == 2
    assert by_type["impression"] >= len(home) + len(results) + len(related)
    assert {"typed", "suggest"} <= set(doc["search"]["by_source"])
    assert {"手机", "shouji"} & {q["query"] for q in doc["search"]["top_queries"]}
    home_cells = [s for s in doc["scenes"] if s["scene"] == "home"]
    assert home_cells and home_cells[0]["variant"] == "personalized" and home_cells[0]["users"] == 1
    assert phone.errors == []


def test_storefront_user_switcher_changes_the_feed(shop, phone):
    page = phone.page
    page.goto(demo_url(shop))
    known = wait_view(page, "home", "feed")

    newcomer = switch_user(page, "newcomer")
    debug = page.locator("#view .feed .debug-line").inner_text()
    assert strategy(page, "feed") == "hybrid", debug  # first visit: from the platform profile
    assert newcomer != known
    assert shop.newcomer in page.locator("#debug-user").inner_text()

    switch_user(page, "anonymous")
    debug = page.locator("#view .feed .debug-line").inner_text()
    assert strategy(page, "feed") == "popularity" and "no experiment" in debug, debug
    sent = events_settled(page)

    before = page.locator("#view .feed").get_attribute("data-request-id")
    page.locator("#user-preset").select_option("custom")
    page.locator("#custom-user-id").fill("first-visit-nobody-knows")
    page.locator("#custom-user button").click()
    page.wait_for_selector(f'#view[data-ready="1"] .feed:not([data-request-id="{before}"]) .card')
    assert "first-visit-nobody-knows" in page.locator("#debug-user").inner_text()
    assert events_settled(page) > sent, "a named user's impressions are sent again"

    # the API's error shape is shown, not swallowed: a key of no app
    page.goto(demo_url(shop, key="not-a-key-of-any-app"))
    page.wait_for_selector("#error:not([hidden])")
    assert "unauthorized" in page.locator("#error").inner_text()
    # the browser logs the failed requests themselves (401) as console errors; nothing else may fail
    assert all("401" in e for e in phone.errors), phone.errors


@pytest.fixture(scope="module")
def traffic(shop) -> int:
    """Simulated shoppers in both variants, so the dashboard has lifts and time series to draw."""
    return drive_traffic(shop)


def load_dashboard(tab: Tab, shop: Shop, key: str) -> Any:
    """Open the dashboard on the last three days (hourly buckets: the traffic spans 36 hours)."""
    page = tab.page
    since = (dt.date.today() - dt.timedelta(days=2)).isoformat()
    page.goto(f"{shop.base_url}/dashboard?{urlencode({'app': 'shop', 'key': key, 'from': since})}")
    page.wait_for_selector("body[data-state='ready']")
    return page


def test_dashboard_draws_experiments_time_series_search_and_models(shop, traffic, desktop, shots):
    page = load_dashboard(desktop, shop, APP_KEY)
    assert page.locator("body").get_attribute("data-errors") == "0", page.locator("#status").inner_text()
    assert "key=" not in page.url, "the key is kept in localStorage, not in the address bar"

    experiment = page.locator('.experiment[data-experiment="home-feed"]')
    assert experiment.locator("svg.interval-chart .zero-line").count() == 1
    assert experiment.locator("svg.interval-chart .estimate").count() >= 4  # lifts of 5 metrics, some may be undefined
    assert experiment.locator("svg.interval-chart .interval").count() >= 3
    assert experiment.locator("tbody tr").count() == 2
    assert page.locator("#timeseries svg.line-chart path.series").count() == 3
    assert page.locator("#timeseries svg.line-chart .point").count() >= 3 * 10  # hourly buckets over 36 h
    assert page.locator("#search-sources svg.bar-chart rect.bar").count() >= 4
    assert page.locator("#hot ol.hot li").count() > 0
    assert page.locator("#top-queries tr").count() > 0
    assert page.locator("#scenes tbody tr").count() >= 2

    status, models = shop.server.request("GET", "/v1/apps/shop/models", headers=H)
    assert status == 200
    assert page.locator("#models .version").inner_text() == models["loaded"]["version"]
    assert page.locator("#models table.versions .badge.live").count() == 1
    assert models["versions"][0]["tuning"]["known"]["family"] in page.locator("#models table.versions").inner_text()
    assert page.locator("#models svg.bar-chart rect.bar").count() == 4  # NDCG of 2 protocols × model, popularity
    assert desktop.errors == []
    screenshot(page, "dashboard", shots)
    page.screenshot(path=str(shots / "dashboard-full.png"), full_page=True)  # for reviewers; not in docs


def test_dashboard_with_the_admin_key_and_with_a_wrong_key(shop, traffic, desktop):
    page = load_dashboard(desktop, shop, ADMIN_KEY)
    assert page.locator("body").get_attribute("data-errors") == "0", page.locator("#status").inner_text()
    assert page.locator("#timeseries svg.line-chart path.series").count() == 3
    assert page.locator(".experiment svg.interval-chart .estimate").count() >= 4
    assert page.locator("#models table.versions tbody tr").count() == 1
    # the hot list is an app route: with the admin key the page says so instead of failing
    hot = page.locator("#hot").inner_text()
    assert "app's own key" in hot or page.locator("#hot ol.hot li").count() > 0

    page.locator("#key").fill("wrong-key-0123456789")
    page.locator("#settings button[type=submit]").click()
    page.wait_for_selector("#status.error:has-text('unauthorized')")
    assert "unauthorized" in page.locator("#models .error").inner_text()
    page.wait_for_selector("body[data-state='ready']")
    assert all(("401" in e or "403" in e) for e in desktop.errors), desktop.errors


def test_models_route_takes_the_app_key_or_the_admin_key_and_reads_the_manifests(shop):
    """The dashboard's model info: what is loaded, and per version its manifest facts and tuning."""
    request = shop.server.request
    assert request("GET", "/v1/apps/shop/models")[0] == 401
    assert request("GET", "/v1/apps/shop/models", headers={"X-API-Key": OTHER_KEY})[0] == 403
    status, body = request("GET", "/v1/apps/nope/models", headers={"X-API-Key": ADMIN_KEY})
    assert status == 404 and body["error"]["code"] == "not_found"
    status, mine = request("GET", "/v1/apps/shop/models", headers=H)
    assert status == 200
    assert request("GET", "/v1/apps/shop/models", headers={"X-API-Key": ADMIN_KEY}) == (200, mine)
    (version,) = mine["versions"]
    assert mine["loaded"]["version"] == mine["published"] == version["version"]
    assert version["published"] and version["loaded"] and version["created_at"]
    assert set(version["metrics"]) == {"stratified", "cold-users"}
    assert version["gate"]["passed"] is True
    known = version["tuning"]["known"]
    assert known["n_trials"] >= 1 and "trials" not in known  # the per-trial list stays in the bundle
    # the pages themselves need no key and are not part of the API schema
    assert request("GET", "/dashboard")[0] == 200 and request("GET", "/pages/dashboard.js")[0] == 200
    assert request("GET", "/pages/..%2Froutes%2Fpages.py")[0] == 404
    paths = request("GET", "/openapi.json")[1]["paths"]
    assert "/v1/apps/{app_id}/models" in paths and not {"/dashboard", "/demo"} & set(paths)
