"""The published asv dashboard renders in a real browser: headless Debian Chromium driven by selenium.

Publishes results/ into a scratch html/ directory, serves it on localhost,
checks that the benchmark grid lists the suite and that a benchmark's graph
draws data points. Screenshots go to the test's scratch directory, or to
docs/ (the README's pictures) with ESTIMATORS_UPDATE_SCREENSHOTS=1, so a
test run leaves the checkout as it was.
"""

import functools
import http.server
import os
import shutil
import threading
from pathlib import Path

import pytest

from tools.run.asv_project import publish, scratch_config

REPO = Path(__file__).resolve().parent.parent
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
GRAPH = "bench_training.ForwardBackward.time_forward"


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory):
    """Where the screenshots go: docs/ when asked to update them, else a scratch directory."""
    if os.environ.get("ESTIMATORS_UPDATE_SCREENSHOTS") == "1":
        return REPO / "docs"
    return tmp_path_factory.mktemp("screenshots")


pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory):
    """The dashboard published from results/, served on an ephemeral localhost port."""
    html = tmp_path_factory.mktemp("dashboard") / "html"
    assert any((REPO / "results").glob("*/machine.json")), "results/ holds no machine's results"
    assert publish(scratch_config(html.parent, html_dir=str(html))) == 0
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(html))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/index.html"
    server.shutdown()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    webdriver = pytest.importorskip("selenium.webdriver")
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.fail(f"{CHROMIUM} and {CHROMEDRIVER} are needed: `make install` installs Debian's chromium")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1600,1000",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    yield driver
    driver.quit()


def _wait(driver, script, timeout=60):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(lambda d: d.execute_script(script))


def test_benchmark_grid_lists_the_suite(dashboard, browser, screenshots):
    browser.get(dashboard)
    names = _wait(
        browser,
        "var n = $('.benchmark-container').map((i, e) => e.getAttribute('href')).get();return n.length ? n : null;",
    )
    for benchmark in (
        "ForwardBackward.time_forward",
        "ForwardBackward.track_peak_memory",
        "Floor.time_backward",
        "Estimate.time_backward",
    ):
        assert any(benchmark in name for name in names), (benchmark, names)
    _wait(browser, "return $('.benchmark-plot canvas').length > 0")  # the thumbnails draw
    browser.save_screenshot(str(screenshots / "dashboard-grid.png"))


def test_benchmark_graph_draws_data(dashboard, browser, screenshots):
    browser.get(f"{dashboard}#{GRAPH}")
    points = _wait(
        browser,
        "var plot = $('#main-graph').data('plot'); if (!plot) return null;"
        "var n = plot.getData().reduce((a, s) => a + s.data.filter(p => p[1] !== null).length, 0);"
        "return n > 0 ? n : null;",
    )
    assert points > 0
    assert browser.find_element("css selector", "#main-graph canvas.flot-base").size["width"] > 100
    browser.save_screenshot(str(screenshots / "dashboard-graph.png"))


def test_benchmark_page_opens_on_one_machine_with_the_legend_beside_the_plot(dashboard, browser):
    """asv draws every machine on one linear axis with the legend over the data (tools/reporting/dashboard.py)."""
    from tools.run.asv_project import summary_machine

    machines = sorted(p.parent.name for p in (REPO / "results").glob("*/machine.json"))
    assert len(machines) > 1, "the check needs results of several machines"
    browser.get(f"{dashboard}#{GRAPH}")
    _wait(browser, "var plot = $('#main-graph').data('plot'); return plot && plot.getData().length > 0;")
    active = browser.execute_script(
        "return $('#graphdisplay-navigation .btn.active').map((i, e) => e.textContent.trim()).get();"
    )
    assert [name for name in active if name in machines] == [summary_machine()], active
    assert browser.execute_script("return $('#estimators-legend .legendLabel').length") > 0
    assert browser.execute_script("return $('#main-graph .legend').length") == 0
    browser.get(f"{dashboard}#{GRAPH}?machine={machines[0]}&machine={machines[-1]}")  # a URL naming machines rules
    _wait(browser, "var plot = $('#main-graph').data('plot'); return plot && plot.getData().length > 0;")
    active = browser.execute_script(
        "return $('#graphdisplay-navigation .btn.active').map((i, e) => e.textContent.trim()).get();"
    )
    assert sorted(name for name in active if name in machines) == [machines[0], machines[-1]], active


def test_benchmark_list_says_na_where_a_machine_has_no_value(dashboard, browser):
    from tools.run.asv_project import summary_machine

    browser.get(f"{dashboard}#summarylist?machine={summary_machine()}")
    _wait(browser, "return $('#summarylist-body td.value').length > 0")
    values = browser.execute_script("return $('#summarylist-body td.value').map((i, e) => e.textContent.trim()).get();")
    assert "n/a" in values  # a CPU has no eager-step or width figures, for one
    assert "" not in values
