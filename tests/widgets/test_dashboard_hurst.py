"""The Hurst-index dashboard without a browser: parameters in, plot data and messages out."""

import logging

import jax
import numpy as np
import pytest

from solverlab.fractional import markov
from solverlab.widgets import DASHBOARDS, HurstDashboard
from solverlab.widgets.hurst import K_SLOTS, N, N_PATHS, exact_kernel

from .rendering import rendered_sources


@pytest.fixture
def dashboard():
    return HurstDashboard()


def columns(sources, name):
    return {k: np.array(v) for k, v in sources[name].data.items()}


def test_registered_and_rendered(dashboard):
    assert DASHBOARDS["hurst"] is HurstDashboard
    sources = rendered_sources(dashboard)
    assert {"exact_paths", "ma_paths", "variance", "acf", "errors", "current"} <= sources.keys()
    for name in ("exact_paths", "ma_paths"):
        paths = columns(sources, name)
        assert len(paths["t"]) == N + 1
        assert all(paths[f"p{i}"][0] == 0.0 for i in range(4))


def test_every_control_moves_the_plots_without_recompiling(dashboard):
    sources = rendered_sources(dashboard)
    compiled = dashboard.compile_count()
    assert compiled == 5  # exact; weights and MA paths for both types
    before = columns(sources, "ma_paths")
    for name, value in (("hurst", 0.72), ("K", 11), ("gamma_max", 1000.0), ("kind", "II (Riemann-Liouville)"),
                        ("seed", 5), ("hurst", 0.05), ("K", 1)):
        setattr(dashboard, name, value)
        assert not dashboard.alert.visible, (name, dashboard.alert.object)
        after = columns(sources, name="ma_paths")
        assert not np.allclose(before["p0"], after["p0"]), name
        before = after
    assert dashboard.compile_count() == compiled


def test_the_numbers_agree_with_the_core(dashboard):
    dashboard.param.update(hurst=0.4, K=7, gamma_max=50.0)
    data = dashboard.data
    with jax.enable_x64(True):  # the dashboard solves for the weights in float64 too
        gammas = markov.speeds(7, np.float64(50.0))
        expected = markov.approximation_error(np.float64(0.4), gammas, kind="I")
        _, _, c = markov.objective_terms(np.float64(0.4), gammas, kind="I")
    np.testing.assert_allclose(data["current"]["error"][0], expected / c, rtol=1e-6)  # sent as float32
    np.testing.assert_allclose(data["variance"]["fbm"], data["variance"]["t"] ** 0.8, rtol=1e-6)
    np.testing.assert_allclose(data["variance"]["target"], data["variance"]["fbm"], rtol=1e-6)  # type I
    rho1 = 0.5 * (2 ** 0.8 - 2)
    np.testing.assert_allclose(data["acf"]["fgn"][:2], [1.0, rho1])
    # The exact sample is the core's: same key, same paths.
    exact = exact_kernel(np.int32(0), np.float32(0.4))
    np.testing.assert_allclose(data["exact_paths"]["p0"], exact["paths"][0], rtol=0, atol=1e-6)


def test_error_falls_with_K_and_is_worse_for_rough_noise(dashboard):
    dashboard.param.update(hurst=0.7, gamma_max=1000.0)
    smooth = dashboard.data["errors"]["error"]
    assert np.all(np.diff(smooth) <= 1e-9)
    dashboard.hurst = 0.1
    rough = dashboard.data["errors"]["error"]
    assert np.all(np.diff(rough) <= 1e-9)
    assert rough[4] > 3 * smooth[4]
    assert len(rough) == K_SLOTS


def test_estimated_hurst_of_the_exact_sample_is_honest(dashboard):
    # 16 paths of 512 steps, pooled: the estimate lies within 4 standard errors of the truth.
    for hurst in (0.05, 0.2, 0.5, 0.8, 0.95):
        dashboard.hurst = hurst
        estimate, stderr = dashboard.data["estimates"]["exact"]
        assert 0.005 < stderr < 0.05
        assert abs(estimate - hurst) < 4 * stderr, (hurst, estimate, stderr)
        text = dashboard.data["summary"]
        assert f"H = {hurst:.2f}" in text and f"{N_PATHS} paths of {N} steps" in text
        assert f"{estimate:.3f} ± {stderr:.3f}" in text


def test_fast_ou_terms_make_the_approximation_rough(dashboard):
    # With gamma_max = 2 the MA-fBM is Brownian below t ~ 1/2: its increments look like H = 1/2.
    dashboard.param.update(hurst=0.2, K=5, gamma_max=2.0)
    slow = dashboard.data["acf"]["ma"][1]
    dashboard.gamma_max = 10000.0
    fast = dashboard.data["acf"]["ma"][1]
    assert abs(slow) < 0.1
    assert fast < slow - 0.1  # anti-correlated increments, as fGn with H = 0.2 (rho(1) = -0.34)


def test_bad_values_are_refused_and_failures_shown(dashboard, monkeypatch, caplog):
    with pytest.raises(ValueError):
        HurstDashboard(hurst=1.0)
    with pytest.raises(ValueError):
        HurstDashboard(K=0)

    def broken():
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(dashboard, "compute", broken)
    with caplog.at_level(logging.ERROR, logger="solverlab.widgets"):
        assert dashboard.refresh() is False
    assert "Unexpected error" in dashboard.alert.object


def test_non_finite_weights_are_reported_not_drawn(dashboard, monkeypatch):
    from solverlab.widgets import hurst as module

    sources = rendered_sources(dashboard)
    good = columns(sources, "ma_paths")
    real = module._weights

    def nan_weights(*args):
        out = dict(real(*args))
        out["weights"] = np.full_like(out["weights"], np.nan)
        return out

    monkeypatch.setattr(module, "_weights", nan_weights)
    dashboard.seed = 9
    assert dashboard.alert.visible
    assert "NaN" in dashboard.alert.object and "gamma_max" in dashboard.alert.object
    np.testing.assert_array_equal(columns(sources, "ma_paths")["p0"], good["p0"])


@pytest.mark.parametrize("kind", ["I (Mandelbrot-van Ness)", "II (Riemann-Liouville)"])
@pytest.mark.parametrize("K, gamma_max", [(20, 2.0), (5, 100.0), (20, 10000.0)])
def test_markov_sample_variance_matches_its_closed_form(kind, K, gamma_max):
    # 16 paths: 16 s^2 / sigma^2 ~ chi^2(16) (mean known to be 0), whose 1e-6 quantiles are 0.17 and
    # 3.4 times 16. Ill-conditioned weights (type I, K = 20, gamma_max = 2) once gave 800x here.
    dashboard = HurstDashboard(kind=kind, K=K, gamma_max=gamma_max, hurst=0.2)
    variance = dashboard.data["variance"]
    ratio = variance["ma_sample"][-1] / variance["ma"][-1]
    assert 0.17 < ratio < 3.4, ratio
    assert ("relax within one grid step" in dashboard.data["summary"]) == (gamma_max / N > 1)
