"""The Reynolds-number dashboard without a browser: parameters in, frames, plot data and messages out."""

import numpy as np
import pytest

from solverlab.fluids import ghia
from solverlab.widgets import DASHBOARDS, ReynoldsDashboard
from solverlab.widgets import reynolds as module

from .rendering import rendered_sources


@pytest.fixture(scope="module")
def dashboard():
    d = ReynoldsDashboard()
    d.sources = rendered_sources(d)
    return d


def columns(dashboard, name):
    return {k: np.array(v) for k, v in dashboard.sources[name].data.items()}


def run_ticks(dashboard, count):
    for _ in range(count):
        dashboard.tick()


def test_registered_and_rendered(dashboard):
    assert DASHBOARDS["reynolds"] is ReynoldsDashboard
    assert {"field", "arrows", "u_profile", "u_ghia", "spectrum", "residual", "energy", "forces"} <= dashboard.sources.keys()
    field = columns(dashboard, "field")
    assert field["image"][0].shape == (module.DEFAULT_GRID + 1, module.DEFAULT_GRID + 1)  # cavity nodes, rows = y
    assert not dashboard.alert.visible


def test_the_cavity_streams_towards_ghia(dashboard):
    dashboard.param.update(flow="lid-driven cavity", reynolds=100, grid=64, run=True)
    dashboard.restart_run()
    before = columns(dashboard, "field")["image"][0].copy()
    run_ticks(dashboard, 3)
    assert dashboard.sim.steps > 0 and dashboard.progress.value >= 0
    assert not np.array_equal(before, columns(dashboard, "field")["image"][0])
    # Ghia's points at Re = 100 are drawn beside the profile.
    points = columns(dashboard, "u_ghia")
    y, u = ghia.centerline_u(100)
    np.testing.assert_array_equal(points["y"], y)
    np.testing.assert_array_equal(points["u"], u)
    # March to steady state (as the page would, frame by frame): the profile then meets Ghia's
    # points to about the grid's accuracy (64 intervals: a few percent of the lid speed).
    for _ in range(400):
        if dashboard.sim.done:
            break
        dashboard.tick()
    assert dashboard.sim.done and dashboard.sim.residual < module.CAVITY_TOL
    assert dashboard.progress.value == 100
    profile = columns(dashboard, "u_profile")
    ours = np.interp(y, profile["y"], profile["u"])
    assert np.max(np.abs(ours - u)) < 0.03
    assert "steady" in dashboard.data["summary"]
    assert dashboard.tick() is False  # nothing left to do


def test_new_reynolds_continues_the_run_and_draws_no_ghia_where_untabulated(dashboard):
    dashboard.param.update(flow="lid-driven cavity", grid=64, reynolds=100)
    steps = dashboard.sim.steps
    dashboard.reynolds = 150
    assert dashboard.sim.steps == steps and not dashboard.sim.done  # same flow, going on
    assert len(columns(dashboard, "u_ghia")["y"]) == 0
    assert "Ghia's points are drawn at Re = 100, 400" in dashboard.data["summary"]


def test_every_flow_runs_without_recompiling(dashboard):
    dashboard.param.update(grid=64, reynolds=100)
    compiled = dashboard.compile_count()
    for flow, source in (("Kolmogorov flow (periodic)", "energy"), ("cylinder wake", "forces"),
                         ("lid-driven cavity", "residual")):
        dashboard.flow = flow
        run_ticks(dashboard, 3)
        assert len(columns(dashboard, source)["t"]) > 0, flow
        assert dashboard._flow_views[dashboard.sim.flow].visible
        assert sum(v.visible for v in dashboard._flow_views.values()) == 1
        for re in (200, 1000, 50):  # traced: a new Reynolds number never recompiles
            dashboard.reynolds = re
            dashboard.tick()
        assert not dashboard.alert.visible or "Under-resolved" in dashboard.alert.object, dashboard.alert.object
    dashboard.seed = 3
    assert dashboard.compile_count() == compiled


def test_kolmogorov_spectrum_carries_its_reference(dashboard):
    dashboard.param.update(flow="Kolmogorov flow (periodic)", grid=64, reynolds=100, seed=0)
    run_ticks(dashboard, 2)
    spectrum = columns(dashboard, "spectrum")
    assert np.all(spectrum["E"] > 0) and np.all(np.isfinite(spectrum["reference"]))
    k4 = np.argmin(np.abs(spectrum["k"] - module.KOLMOGOROV_K))
    assert spectrum["reference"][k4] == pytest.approx(spectrum["E"][k4])


def test_a_blow_up_shows_a_message_and_stops(dashboard):
    dashboard.param.update(flow="lid-driven cavity", grid=32, reynolds=10000)
    assert "Under-resolved" in dashboard.alert.object and "No grid offered here resolves Re = 10000" in dashboard.alert.object
    for _ in range(300):
        if dashboard.sim.done:
            break
        dashboard.tick()
    assert dashboard.sim.done and dashboard.alert.visible
    assert "blew up" in dashboard.alert.object and "CFL" in dashboard.alert.object
    assert all(np.all(np.isfinite(v)) for v in columns(dashboard, "field")["image"])  # the last good frame
    dashboard.run = False  # another control: the stopped run keeps saying why it stopped
    assert dashboard.alert.visible and "blew up" in dashboard.alert.object
    dashboard.param.update(reynolds=100, run=True)  # a good state again: the message goes with a new run
    dashboard.restart_run()
    assert not dashboard.alert.visible


def test_an_unexpected_error_in_a_frame_stops_the_run_and_says_so(dashboard, monkeypatch, caplog):
    dashboard.param.update(flow="Kolmogorov flow (periodic)", grid=64, reynolds=100, run=True)
    dashboard.restart_run()

    def broken(*args):
        raise RuntimeError("boom")

    monkeypatch.setattr(dashboard.sim, "advance", broken)
    assert dashboard.tick() is False
    assert dashboard.sim.done and "Unexpected error (RuntimeError: boom)" in dashboard.alert.object
    assert "ReynoldsDashboard frame failed" in caplog.text
    dashboard.restart_run()
    assert not dashboard.alert.visible


def test_the_restart_button_is_shown_and_not_watched(dashboard):
    from bokeh.models import Button
    import panel as pn

    assert "restart" not in dashboard.controls()
    buttons = [b.label for b in pn.panel(dashboard).get_root().select({"type": Button})]
    assert "restart" in buttons


def test_the_cavity_seed_does_not_restart_it(dashboard):
    dashboard.param.update(flow="lid-driven cavity", grid=64, reynolds=100, seed=0)
    run_ticks(dashboard, 2)
    sim = dashboard.sim
    dashboard.seed = 5
    assert dashboard.sim is sim


def test_paused_runs_do_not_advance(dashboard):
    dashboard.param.update(flow="cylinder wake", grid=64, reynolds=100, run=False)
    steps = dashboard.sim.steps
    assert dashboard.tick() is False and dashboard.sim.steps == steps
    dashboard.run = True
    assert dashboard.tick() is True and dashboard.sim.steps > steps


def test_bad_choices_are_refused():
    with pytest.raises(ValueError, match="flow must be one of cavity, kolmogorov, cylinder"):
        module.make_simulation("pipe", 64)
    with pytest.raises(ValueError, match="grid size must be one of 32, 64, 128, got 48"):
        module.make_simulation("cavity", 48)
    with pytest.raises(ValueError):
        ReynoldsDashboard(reynolds=5)  # not among the slider's values
