"""The Brownian tree dashboard without a browser: parameters in, plot data and messages out."""

import logging

import jax
import numpy as np
import panel as pn
import pytest

from solverlab.brownian import BrownianTree
from .rendering import rendered_sources
from solverlab.widgets import DASHBOARDS, BrownianTreeDashboard
from solverlab.widgets.brownian_tree import M_SHOWN, N_KEYS, moments_kernel, path_kernel


@pytest.fixture
def dashboard():
    return BrownianTreeDashboard()


def snapshot(sources) -> dict[str, dict[str, np.ndarray]]:
    return {name: {k: np.array(v) for k, v in cds.data.items()} for name, cds in sources.items()}


def same(x: dict, y: dict, atol: float = 1e-6) -> bool:
    """Equal columns, up to ``atol`` (float32 rounding); a new path differs by far more."""
    return x.keys() == y.keys() and all(
        np.shape(x[k]) == np.shape(y[k]) and np.allclose(x[k], y[k], equal_nan=True, rtol=0, atol=atol) for k in x
    )


def test_plots_follow_the_parameters(dashboard):
    sources = rendered_sources(dashboard)
    assert {"coarse", "fine", "inside", "window", "leaves", "moments"} <= sources.keys()
    start = snapshot(sources)

    dashboard.seed = 7  # a new key: a new path everywhere
    after_seed = snapshot(sources)
    for name in ("coarse", "fine", "inside", "moments"):
        assert not same(start[name], after_seed[name]), name

    dashboard.window = (0.6, 0.9)  # same key and tol: the coarse path stays put
    after_window = snapshot(sources)
    assert same(after_seed["coarse"], after_window["coarse"])
    for name in ("fine", "inside", "window", "moments"):
        assert not same(after_seed[name], after_window[name]), name
    np.testing.assert_array_equal(after_window["window"]["x0"], [0.6])
    np.testing.assert_allclose(after_window["fine"]["t"][[0, -1]], [0.6, 0.9], rtol=1e-6)


def test_refining_tol_keeps_the_coarse_path(dashboard):
    # The coarse grid is k / 256, a level-8 dyadic grid: nodes of the tree whenever depth >= 8, which
    # refining tol keeps. The fine grid of [0.25, 0.5] is at level 11, inside the leaves at depth 10.
    sources = rendered_sources(dashboard)
    dashboard.log10_tol = -3.0  # depth 10
    before = snapshot(sources)
    dashboard.log10_tol = -4.5  # depth 15
    after = snapshot(sources)
    assert same(before["coarse"], after["coarse"], atol=1e-5)  # the sums differ in rounding only
    assert not same(before["fine"], after["fine"], atol=1e-2)


def test_coarse_points_lie_on_the_refined_path(dashboard):
    # One key, one path: where the two grids meet (every 8th fine point of [0.25, 0.5]), they agree.
    data = dashboard.data
    np.testing.assert_allclose(data["fine"]["t"][::8], data["inside"]["t"], atol=1e-7)
    np.testing.assert_allclose(data["fine"]["W"][::8], data["inside"]["W"], atol=1e-5)


def test_leaves_are_shaded_only_when_few():
    dashboard = BrownianTreeDashboard(log10_tol=-1.0)  # depth 4: leaves of length 1/16
    bands = dashboard.data["leaves"]
    np.testing.assert_allclose(bands["x0"], [0.25, 0.375])
    np.testing.assert_allclose(bands["x1"], [0.3125, 0.4375])
    assert "**4 leaves**" in dashboard.data["summary"]

    dashboard.log10_tol = -3.0  # 256 leaves in [0.25, 0.5]: too many to draw
    assert len(dashboard.data["leaves"]["x0"]) == 0
    assert "**256 leaves**" in dashboard.data["summary"]
    assert "not shaded" in dashboard.data["summary"]


def test_empty_window_shows_a_message_and_keeps_the_plots(dashboard):
    sources = rendered_sources(dashboard)
    good = snapshot(sources)
    assert not dashboard.alert.visible

    dashboard.window = (0.4, 0.4)  # both handles together: what a range slider can send
    assert dashboard.alert.visible
    assert "a < b" in dashboard.alert.object and "0.4" in dashboard.alert.object
    assert all(same(good[name], data) for name, data in snapshot(sources).items())

    dashboard.window = (0.4, 0.45)
    assert not dashboard.alert.visible
    assert not same(good["fine"], snapshot(sources)["fine"])


def test_unexpected_errors_are_logged_and_shown(dashboard, monkeypatch, caplog):
    def broken():
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(dashboard, "compute", broken)
    with caplog.at_level(logging.ERROR, logger="solverlab.widgets"):
        assert dashboard.refresh() is False
    assert dashboard.alert.visible
    assert "Unexpected error (ZeroDivisionError: division by zero)" in dashboard.alert.object
    assert any(record.exc_info for record in caplog.records)


def test_bad_initial_values_raise_at_construction():
    with pytest.raises(ValueError, match="a < b"):
        BrownianTreeDashboard(window=(0.5, 0.5))
    with pytest.raises(ValueError):  # the parameter's bounds are the validation
        BrownianTreeDashboard(log10_tol=-8.0)


def test_no_recompiles_after_warm_up(dashboard):
    rendered_sources(dashboard)
    compiled = dashboard.compile_count()
    assert compiled >= 4  # two kernels, with and without Levy area
    # What a browser sends: ints where the value looks integral, floats elsewhere.
    moves = [
        {"log10_tol": -2}, {"log10_tol": -5.3}, {"log10_tol": -1.0},
        {"window": (0, 1)}, {"window": (0.125, 0.75)},
        {"seed": 1}, {"seed": 999},
        {"levy_area": False}, {"log10_tol": -4}, {"window": (0.3, 0.31)}, {"levy_area": True},
    ]
    for move in moves:
        dashboard.param.update(**move)
        assert not dashboard.alert.visible, dashboard.alert.object
    assert dashboard.compile_count() == compiled


def test_the_compile_counter_sees_a_retrace(dashboard):
    # The check above can fail: a Python int seed (weakly typed) is a new variant.
    before = dashboard.compile_count()
    path_kernel(5, np.float32(1e-3), np.float32(0.25), np.float32(0.5), levy_area=True)
    assert dashboard.compile_count() == before + 1


@pytest.mark.parametrize(
    "window, log10_tol",
    [((0.25, 0.5), -1.0), ((0.1, 0.95), -1.0), ((0.25, 0.5), -3.0), ((0.333, 0.3335), -3.5),
     ((0.1, 0.95), -6.0), ((0.333, 0.3335), -6.0)],
)
def test_sample_moments_agree_with_theory(window, log10_tol):
    # a and b in different leaves (at least tol apart): the increment's law is exact.
    # Pooled over 8 seeds, n = 8 * 2048 increments: W^2/h and 12 H^2/h have mean 1 and variance 2,
    # sqrt(12) W H / h has mean 0 and variance 1. Allow 4.5 standard errors.
    seeds = range(8)
    n = len(seeds) * N_KEYS
    finals = []
    for seed in seeds:
        moments = BrownianTreeDashboard(seed=seed, window=window, log10_tol=log10_tol).data["moments"]
        assert moments["m"][-1] == N_KEYS
        finals.append([moments["w2"][-1], moments["h2"][-1], moments["wh"][-1]])
    w2, h2, wh = np.mean(finals, axis=0)
    assert abs(w2 - 1.0) < 4.5 * np.sqrt(2.0 / n)
    assert abs(h2 - 1.0) < 4.5 * np.sqrt(2.0 / n)
    assert abs(wh) < 4.5 / np.sqrt(n)


def test_a_window_inside_one_leaf_is_flagged_and_misses_the_law():
    # Below tol the tree interpolates (one draw per leaf): the page says so, and the numbers show it.
    dashboard = BrownianTreeDashboard(window=(0.333, 0.3335), log10_tol=-1.0)
    assert "share one leaf" in dashboard.data["summary"]
    assert dashboard.data["moments"]["w2"][-1] < 0.5
    dashboard.param.update(log10_tol=-6.0)
    assert "share one leaf" not in dashboard.data["summary"]


def test_running_moments_are_running_means_of_the_trees_increments():
    seed, tol, a, b = 3, 1e-3, 0.2, 0.7
    args = (np.int32(seed), np.float32(tol), np.float32(a), np.float32(b))
    moments = moments_kernel(*args, levy_area=True)
    # The same N_KEYS trees, queried one by one outside the kernel.
    keys = jax.random.split(jax.random.fold_in(jax.random.key(seed), 1), N_KEYS)
    query = jax.jit(jax.vmap(lambda k: BrownianTree(0.0, 1.0, tol, (), k, levy_area="space-time").evaluate(a, b)))
    inc = query(keys)
    w, h = np.asarray(inc.W, np.float64), np.asarray(inc.H, np.float64)
    running = lambda x: np.cumsum(x)[M_SHOWN - 1] / M_SHOWN  # noqa: E731
    np.testing.assert_allclose(moments["w2"], running(w * w / (b - a)), rtol=2e-4, atol=1e-6)
    np.testing.assert_allclose(moments["h2"], running(12 * h * h / (b - a)), rtol=2e-4, atol=1e-6)
    np.testing.assert_allclose(moments["wh"], running(np.sqrt(12) * w * h / (b - a)), rtol=2e-4, atol=1e-5)

    without = moments_kernel(*args, levy_area=False)
    assert np.all(np.isnan(without["h2"])) and np.all(np.isnan(without["wh"]))
    assert np.all(np.isfinite(without["w2"]))


def test_registry_builds_servable_dashboards():
    assert "brownian_tree" in DASHBOARDS
    dashboard = DASHBOARDS["brownian_tree"]()
    assert isinstance(dashboard, BrownianTreeDashboard)
    assert pn.panel(dashboard).get_root() is not None
