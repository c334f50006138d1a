"""The served dashboards in headless Chromium: the page loads, a slider move updates the plot, a bad
state shows a message. The module starts and stops its own servers on free 127.0.0.1 ports."""

import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import _browser as browser  # noqa: E402  (the harness the latency benchmark uses too)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(browser.chromium_missing() is not None, reason=str(browser.chromium_missing())),
]

APP = ROOT / "widgets" / "apps" / "brownian_tree.py"
STEP_SIZE_APP = ROOT / "widgets" / "apps" / "step_size.py"
HURST_APP = ROOT / "widgets" / "apps" / "hurst.py"
GUIDANCE_APP = ROOT / "widgets" / "apps" / "guidance.py"
REYNOLDS_APP = ROOT / "widgets" / "apps" / "reynolds.py"


@pytest.fixture(scope="module")
def chromium_browser():
    with browser.chromium() as instance:
        yield instance


@pytest.fixture(scope="module")
def server():
    with browser.panel_server(APP, STEP_SIZE_APP, HURST_APP, GUIDANCE_APP, REYNOLDS_APP) as running:
        yield running


@pytest.fixture
def tab(chromium_browser, server):
    """A fresh browser session on the dashboard, ready for input."""
    page = browser.open_app(chromium_browser, server.url("brownian_tree"))
    yield page
    page.close()


def test_page_loads_with_plots(tab):
    assert tab.locator(".bk-Canvas").count() == 3
    coarse = browser.source_data(tab, "coarse")
    assert len(coarse["t"]) == 257 and all(math.isfinite(w) for w in coarse["W"])
    assert all(math.isfinite(x) for x in browser.source_data(tab, "moments")["h2"])
    assert tab.get_by_text("leaves meet [a, b]").is_visible()
    assert not tab.get_by_text("must have a < b").is_visible()


def test_seed_slider_move_updates_the_plots(tab):
    before = browser.data_signature(tab)
    coarse = browser.source_data(tab, "coarse")["W"]
    browser.press(browser.slider_handle(tab, "seed"), "ArrowRight")
    browser.wait_for_data_change(tab, before)
    assert browser.source_data(tab, "coarse")["W"] != coarse
    assert tab.get_by_text("seed: 1").is_visible()


def test_levy_area_toggle_updates_the_moments(tab):
    before = browser.data_signature(tab)
    tab.locator(".bk-Checkbox").filter(has_text="Levy area").locator("input").uncheck()
    browser.wait_for_data_change(tab, before)
    moments = browser.source_data(tab, "moments")
    assert all(math.isnan(x) for x in moments["h2"])
    assert all(math.isfinite(x) for x in moments["w2"])


def test_empty_window_shows_a_message(tab):
    lower = browser.slider_handle(tab, "zoom window", "lower")
    browser.press(lower, "End")  # the lower handle runs into the upper one: a = b
    message = tab.get_by_text("must have a < b")
    message.wait_for(state="visible")
    assert "a = 0.5, b = 0.5" in message.inner_text()

    before = browser.data_signature(tab)
    browser.press(lower, "Home")  # a valid window again: the message goes, the plots follow
    message.wait_for(state="hidden")
    browser.wait_for_data_change(tab, before)


@pytest.fixture
def step_tab(chromium_browser, server):
    """A fresh browser session on the step-size dashboard, ready for input."""
    page = browser.open_app(chromium_browser, server.url("step_size"))
    yield page
    page.close()


def select(page, title: str, value: str) -> None:
    """Choose ``value`` in the Select widget whose title contains ``title``."""
    page.locator(".bk-input-group").filter(has_text=title).locator("select").select_option(value)


def test_step_size_page_loads_with_plots(step_tab):
    assert step_tab.locator(".bk-Canvas").count() == 2
    solution = browser.source_data(step_tab, "solution")
    assert len(solution["t"]) == 33 and all(math.isfinite(y) for y in solution["y"])  # 2^-5: 32 steps
    labels = browser.source_data(step_tab, "curves")["label"]
    assert len(labels) == 3 and all("fitted" in label and "theory" in label for label in labels)
    assert step_tab.get_by_text("32 steps", exact=False).first.is_visible()


def test_step_size_slider_move_updates_the_solution(step_tab):
    before = browser.data_signature(step_tab)
    reference = browser.source_data(step_tab, "reference")["y"]
    browser.press(browser.slider_handle(step_tab, "log2 dt"), "ArrowLeft")  # 2^-5.25: 38 steps
    browser.wait_for_data_change(step_tab, before)
    assert len(browser.source_data(step_tab, "solution")["t"]) == 39
    assert browser.source_data(step_tab, "reference")["y"] == reference  # same tree, same exact path
    assert browser.source_data(step_tab, "step")["dt"] == [pytest.approx(1 / 38)]


def test_step_size_invalid_solver_shows_a_message(step_tab):
    select(step_tab, "solver", "ShARK")  # GBM's noise is multiplicative; ShARK needs additive noise
    message = step_tab.get_by_text("ShARK cannot solve GBM")
    message.wait_for(state="visible")
    assert "pick one of" in message.inner_text()

    before = browser.data_signature(step_tab)
    select(step_tab, "SDE", "OU")  # additive noise: the message goes, the plots follow
    message.wait_for(state="hidden")
    browser.wait_for_data_change(step_tab, before)
    assert len(browser.source_data(step_tab, "curves")["label"]) == 4


@pytest.fixture
def hurst_tab(chromium_browser, server):
    """A fresh browser session on the Hurst-index dashboard, ready for input."""
    page = browser.open_app(chromium_browser, server.url("hurst"))
    yield page
    page.close()


def test_hurst_page_loads_with_plots(hurst_tab):
    assert hurst_tab.locator(".bk-Canvas").count() == 5
    for name in ("exact_paths", "ma_paths"):
        paths = browser.source_data(hurst_tab, name)
        assert len(paths["t"]) == 513 and paths["p0"][0] == 0 and all(math.isfinite(x) for x in paths["p0"])
    assert hurst_tab.get_by_text("Estimated H from 16 paths", exact=False).is_visible()


@pytest.mark.parametrize("title", ["Hurst index H", "OU terms K", "gamma_max"])
def test_hurst_slider_moves_update_the_approximation(hurst_tab, title):
    before = browser.data_signature(hurst_tab)
    paths = browser.source_data(hurst_tab, "ma_paths")["p0"]
    browser.press(browser.slider_handle(hurst_tab, title), "ArrowRight")
    browser.wait_for_data_change(hurst_tab, before)
    assert browser.source_data(hurst_tab, "ma_paths")["p0"] != paths


@pytest.mark.parametrize("key, hurst", [("Home", "0.01"), ("End", "0.99")])
def test_hurst_extremes_draw_finite_plots_without_a_message(hurst_tab, key, hurst):
    before = browser.data_signature(hurst_tab)
    browser.press(browser.slider_handle(hurst_tab, "Hurst index H"), key)
    browser.wait_for_data_change(hurst_tab, before)
    assert hurst_tab.get_by_text(f"H = {hurst}", exact=False).is_visible()
    for name, column in (("ma_paths", "p0"), ("variance", "ma"), ("errors", "error")):
        assert all(math.isfinite(x) for x in browser.source_data(hurst_tab, name)[column]), name
    assert not hurst_tab.locator(".alert").is_visible()


@pytest.fixture
def guidance_tab(chromium_browser, server):
    """A fresh browser session on the guidance-scale dashboard, ready for input."""
    page = browser.open_app(chromium_browser, server.url("guidance"), height=1200)
    yield page
    page.close()


def test_guidance_page_loads_with_plots(guidance_tab):
    from solverlab.widgets import guidance

    canvases = 3 if guidance.digits_available() else 2
    assert guidance_tab.locator(".bk-Canvas").count() == canvases
    for name in ("samples", "reference"):
        points = browser.source_data(guidance_tab, name)
        assert len(points["x"]) == 256 and all(math.isfinite(x) for x in points["x"]), name
    labels = browser.source_data(guidance_tab, "curves")["label"]
    assert [label.split(":")[0] for label in labels] == list(guidance.guidance_methods())
    assert guidance_tab.get_by_text("Terminal error against the reference", exact=False).is_visible()


@pytest.mark.parametrize("title", ["guidance scale w", "class c"])
def test_guidance_slider_moves_update_samples_and_reference(guidance_tab, title):
    before = browser.data_signature(guidance_tab)
    samples = browser.source_data(guidance_tab, "samples")["x"]
    reference = browser.source_data(guidance_tab, "reference")["x"]
    browser.press(browser.slider_handle(guidance_tab, title), "ArrowRight")
    browser.wait_for_data_change(guidance_tab, before)
    assert browser.source_data(guidance_tab, "samples")["x"] != samples
    assert browser.source_data(guidance_tab, "reference")["x"] != reference


def test_guidance_nfe_move_keeps_the_reference(guidance_tab):
    before = browser.data_signature(guidance_tab)
    samples = browser.source_data(guidance_tab, "samples")["x"]
    reference = browser.source_data(guidance_tab, "reference")["x"]
    browser.press(browser.slider_handle(guidance_tab, "NFE"), "ArrowRight")
    browser.wait_for_data_change(guidance_tab, before)
    assert browser.source_data(guidance_tab, "samples")["x"] != samples
    assert browser.source_data(guidance_tab, "reference")["x"] == reference  # same noise, same w
    assert browser.source_data(guidance_tab, "current")["nfe"] == [11]


def test_guidance_large_w_few_steps_is_flagged_unstable(guidance_tab):
    select(guidance_tab, "method", "dpm_solver_3")
    guidance_tab.get_by_text("dpm_solver_3, NFE = 10", exact=False).wait_for()
    browser.press(browser.slider_handle(guidance_tab, "guidance scale w"), "End")  # w = 15
    browser.press(browser.slider_handle(guidance_tab, "NFE"), "Home")  # NFE = 3
    guidance_tab.get_by_text("NFE = 3,", exact=False).wait_for()
    assert guidance_tab.get_by_text("this run is unstable", exact=False).is_visible()
    assert guidance_tab.get_by_text("Unstable at w = 15", exact=False).is_visible()
    assert 3 in browser.source_data(guidance_tab, "unstable_points")["nfe"]
    assert not guidance_tab.locator(".alert").is_visible()  # finite samples: flagged, not an error


@pytest.fixture
def reynolds_tab(chromium_browser, server):
    """A fresh browser session on the Reynolds-number dashboard, ready for input."""
    page = browser.open_app(chromium_browser, server.url("reynolds"), height=1100)
    yield page
    page.close()


def run_switch(page):
    return page.locator(".bk-Checkbox").filter(has_text="run").locator("input")


def test_reynolds_page_streams_frames_while_it_runs(reynolds_tab):
    assert reynolds_tab.locator(".bk-Canvas").count() >= 4  # the field, the two centrelines, the residual
    first = browser.data_signature(reynolds_tab)
    browser.wait_for_data_change(reynolds_tab, first)  # frames arrive with no input at all
    reynolds_tab.wait_for_function(  # the first residual check, about half a flow time in
        "() => { const d = Bokeh.documents[0].get_model_by_name('residual').data; "
        "return (d instanceof Map ? d.get('t') : d.t).length > 0; }", timeout=30_000)
    residual = browser.source_data(reynolds_tab, "residual")
    assert len(residual["t"]) > 0 and all(math.isfinite(r) for r in residual["residual"])
    assert len(browser.source_data(reynolds_tab, "u_ghia")["u"]) == 17  # Re = 100: Ghia's points
    reynolds_tab.get_by_text("steady", exact=False).first.wait_for()  # marching to it, or there


def test_reynolds_slider_move_updates_the_summary_while_paused(reynolds_tab):
    run_switch(reynolds_tab).uncheck()
    reynolds_tab.wait_for_timeout(500)  # the last frame in flight lands
    before = browser.data_signature(reynolds_tab)
    browser.press(browser.slider_handle(reynolds_tab, "Reynolds number Re"), "ArrowRight")  # 100 -> 150
    reynolds_tab.get_by_text("Re = 150", exact=False).first.wait_for()
    browser.wait_for_data_change(reynolds_tab, before)
    assert browser.source_data(reynolds_tab, "u_ghia")["u"] == []  # Ghia tabulates 100 and 400, not 150


def test_reynolds_flow_switch_and_a_blow_up_shows_a_message(reynolds_tab):
    select(reynolds_tab, "flow", "cylinder wake")
    reynolds_tab.get_by_text("cylinder wake, Re = 100", exact=False).first.wait_for()
    assert len(browser.source_data(reynolds_tab, "obstacle")["x"]) == 1
    select(reynolds_tab, "flow", "lid-driven cavity")
    select(reynolds_tab, "grid size", "32")
    browser.press(browser.slider_handle(reynolds_tab, "Reynolds number Re"), "End")  # Re = 10000 on 33^2 nodes
    message = reynolds_tab.get_by_text("blew up", exact=False)
    message.wait_for(state="visible", timeout=60_000)
    assert "CFL" in message.inner_text()


def test_solverlab_serve_index_links_to_the_dashboard(chromium_browser):
    def command(port):
        return [sys.executable, "-m", "solverlab.widgets.cli", "serve", "--port", str(port)]

    with browser.server_process(command, ["", "brownian_tree"]) as running:
        page = chromium_browser.new_page()
        page.goto(running.url())
        page.get_by_role("link", name="brownian_tree").click()
        page.wait_for_url("**/brownian_tree")
        browser.wait_until_ready(page)
        assert len(browser.source_data(page, "coarse")["W"]) == 257
        page.close()
