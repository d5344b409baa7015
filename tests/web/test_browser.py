"""The dashboard in real headless Chromium (Debian's, through Playwright), against `labfolio ui`."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import ServerProcess, free_port
from labfolio.store import open_store
from seed import append_points, seed_study

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory):
    home = tmp_path_factory.mktemp("browser")
    store = open_store(home / "lf")
    seed_study(store)
    from seed import start_run

    start_run(store, "long_run", experiment="exp_long", state="finished")
    steps = np.arange(50_000)
    values = np.sin(steps / 500.0)
    values[31_337] = 25.0
    append_points(store, "long_run", "loss", steps, values)
    server = ServerProcess(["ui", "--store", str(home / "lf")], free_port(), log=home / "ui.log").start()
    yield server, store
    server.stop()
    store.close()


@pytest.fixture
def page(browser, dashboard, tmp_path):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    page.shots = tmp_path
    yield page
    assert page.errors == [], f"JavaScript errors: {page.errors}"
    context.close()


def _traces(page, selector):
    return page.locator(f"{selector} .scatterlayer .trace")


def _drawn_points(page, selector):
    return page.evaluate(f"() => document.querySelector('{selector}').data.reduce((n, t) => n + t.x.length, 0)")


def test_every_page_opens_and_draws_its_charts(page, dashboard):
    server, _ = dashboard
    page.goto(f"{server.url}/runs")
    assert page.locator("#runs-table tbody tr").count() == 8  # the seeded study and one long run
    page.screenshot(path=str(page.shots / "runs.png"), full_page=True)
    page.goto(f"{server.url}/experiments")
    assert page.locator("text=exp_a").first.is_visible()
    page.screenshot(path=str(page.shots / "experiments.png"))
    page.goto(f"{server.url}/experiments/exp_a")
    page.wait_for_selector("#band-chart .scatterlayer .trace")
    assert _traces(page, "#band-chart").count() == 4  # a band and a mean line per variant
    assert page.locator("#comparison-table").inner_text().count("better") >= 1
    assert page.locator("#experiment-note h2").count() >= 3  # the rendered notebook note
    page.screenshot(path=str(page.shots / "experiment.png"), full_page=True)
    page.goto(f"{server.url}/runs/exp_a_mhc_s0")
    page.wait_for_selector("#chart-1 .scatterlayer .trace path.js-line")
    assert _drawn_points(page, "#chart-1") > 20
    page.check("input[name=config-view][value=overrides]")
    assert page.locator("#config-table tr.default").first.is_hidden()
    page.screenshot(path=str(page.shots / "run.png"), full_page=True)
    for shot in ("runs", "experiments", "experiment", "run"):
        assert (page.shots / f"{shot}.png").stat().st_size > 10_000


def test_select_two_runs_and_open_compare(page, dashboard):
    server, _ = dashboard
    page.goto(f"{server.url}/runs?experiment=exp_a")
    boxes = page.locator(".run-select")
    boxes.nth(0).check()
    boxes.nth(3).check()
    assert page.locator("#selected-count").inner_text() == "2"
    page.click("#compare-selected")
    page.wait_for_url("**/compare?run=*")
    page.wait_for_selector("#compare-chart .scatterlayer .trace path.js-line")
    assert _traces(page, "#compare-chart").count() == 2
    assert page.locator("#config-diff tbody tr").count() >= 1
    before = page.evaluate("() => document.querySelector('#compare-chart').data[0].y.slice(0, 50)")
    page.locator("#smoothing").fill("0.9")
    page.locator("#smoothing").dispatch_event("change")
    page.wait_for_function("(b) => JSON.stringify(document.querySelector('#compare-chart').data[0].y.slice(0, 50)) "
                           "!== JSON.stringify(b)", arg=before)
    page.select_option("#x-axis", "time")
    page.wait_for_function("() => document.querySelector('#compare-chart').layout.xaxis.title.text === 'time'")
    page.screenshot(path=str(page.shots / "compare.png"), full_page=True)


def test_a_running_runs_curve_grows_without_a_reload(page, dashboard):
    server, store = dashboard
    page.goto(f"{server.url}/runs/exp_b_baseline_s0")
    page.wait_for_selector("#chart-1 .scatterlayer .trace path.js-line")
    last_x = "() => { const d = document.querySelector('#chart-1').data[0]; return d.x[d.x.length - 1]; }"
    start = page.evaluate(last_x)
    append_points(store, "exp_b_baseline_s0", "train/loss", np.arange(start + 1, start + 101),
                  np.linspace(1.0, 0.5, 100))
    page.wait_for_function(f"() => ({last_x})() === {start + 100}", timeout=20_000)
    assert page.locator("#run-step").inner_text() == str(start + 100)
    page.screenshot(path=str(page.shots / "live.png"))


def test_hypothesis_edited_in_the_page_reaches_the_store(page, dashboard):
    server, store = dashboard
    page.goto(f"{server.url}/experiments/exp_b")
    page.fill("#edit-hypothesis", "Higher LR converges faster")
    page.click("section[data-field=hypothesis] button")
    page.wait_for_selector("section[data-field=hypothesis] .edit-result.ok")
    assert store.note_fields("experiment", "exp_b")["hypothesis"] == "Higher LR converges faster"


def test_zooming_asks_the_server_for_finer_buckets_and_spikes_survive(page, dashboard):
    server, _ = dashboard
    page.goto(f"{server.url}/runs/long_run")
    page.wait_for_selector("#chart-1 .scatterlayer .trace path.js-line")
    in_view = ("() => { const d = document.querySelector('#chart-1').data[0]; let n = 0;"
               " for (const x of d.x) if (x >= 30000 && x <= 31000) n++; return n; }")
    assert page.evaluate("() => Math.max(...document.querySelector('#chart-1').data[0].y)") == 25.0
    coarse = page.evaluate(in_view)
    page.evaluate("() => Plotly.relayout(document.querySelector('#chart-1'), {'xaxis.range': [30000, 31000]})")
    page.wait_for_function(f"() => ({in_view})() > {coarse * 5}", timeout=15_000)
    assert page.evaluate(in_view) > 500  # the view is drawn from its own ~2000 buckets
    page.screenshot(path=str(page.shots / "zoom.png"))
