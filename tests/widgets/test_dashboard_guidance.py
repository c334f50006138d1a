"""The guidance-scale dashboard without a browser: parameters in, plot data and messages out.

Most tests use three methods (``METHODS_UNDER_TEST``) so the warm-up stays short; one checks that
the default dashboard offers every registered method that needs no fitted statistics (the browser
test draws them all).
"""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from solverlab.diffusion import gmm, metrics, reference_solve, sample, samplers
from solverlab.widgets import DASHBOARDS, GuidanceDashboard
from solverlab.widgets import guidance as module
from solverlab.widgets.guidance import MIXTURE, N_SAMPLES, NFE_GRID, SCHEDULE

from .rendering import rendered_sources

METHODS_UNDER_TEST = ("ddim", "dpm_solver_3", "dpm_solver++_2m")  # not in alphabetical order


@pytest.fixture(scope="module")
def dashboard():
    return GuidanceDashboard(methods=METHODS_UNDER_TEST)


@pytest.fixture(autouse=True)
def defaults(dashboard):
    """Every test starts from the default controls (the dashboard is shared)."""
    dashboard.param.update(w=3.0, nfe=10, method="dpm_solver++_2m", steps="logSNR", label=0, seed=0)
    yield


def columns(sources, name):
    return {k: np.array(v) for k, v in sources[name].data.items()}


def test_registered_and_rendered(dashboard):
    assert DASHBOARDS["guidance"] is GuidanceDashboard
    sources = rendered_sources(dashboard)
    expected = {"contours", "samples", "reference", "curves", "curve_points", "unstable_points",
                "current", "threshold"}
    assert expected <= sources.keys()
    assert len(sources["reference"].data["x"]) == N_SAMPLES
    assert len(sources["samples"].data["x"]) == N_SAMPLES
    assert len(sources["contours"].data["xs"]) == 3  # the 50%, 90% and 99% mass contours
    # In the order given (the colours follow it), whatever the order of the names.
    assert [label.split(":")[0] for label in sources["curves"].data["label"]] == list(METHODS_UNDER_TEST)
    if module.digits_available():
        assert "digits" in sources
        assert np.asarray(sources["digits"].data["image"][0]).shape == (35, 35)  # 4 x 4 digits of 8 x 8, 1-pixel gaps


def test_moving_w_nfe_class_seed_does_not_recompile(dashboard):
    sources = rendered_sources(dashboard)
    compiled = dashboard.compile_count()
    before = columns(sources, "samples")
    # (At w = 0 the class does not matter: the label moves come at w > 0.)
    for name, value in (("w", 3.25), ("nfe", 11), ("label", 4), ("seed", 7), ("w", 0.0), ("nfe", 50),
                        ("seed", 999), ("w", 15.0), ("label", 9), ("nfe", 3)):
        setattr(dashboard, name, value)
        assert not dashboard.alert.visible, (name, dashboard.alert.object)
        after = columns(sources, "samples")
        assert not np.allclose(before["x"], after["x"]), name
        before = after
    assert dashboard.compile_count() == compiled
    # A step schedule used for the first time compiles once (each method's sampler, this method's digits).
    dashboard.steps = "time"
    compiled = dashboard.compile_count()
    for name, value in (("w", 7.5), ("nfe", 20), ("label", 1), ("seed", 3)):
        setattr(dashboard, name, value)
    assert dashboard.compile_count() == compiled


def test_an_nfe_move_sends_only_what_changed(dashboard):
    sources = rendered_sources(dashboard)
    kept = {name: sources[name].data for name in ("contours", "reference", "curves", "threshold")}
    moved = {name: sources[name].data for name in ("samples", "current")}
    dashboard.nfe = 12
    assert all(sources[name].data is data for name, data in kept.items())  # not sent again
    assert all(sources[name].data is not data for name, data in moved.items())
    assert sources["current"].data["nfe"] == [12]
    dashboard.w = 4.0  # a new w: everything follows
    assert all(sources[name].data is not data for name, data in kept.items())


def test_samples_reference_and_error_are_the_cores(dashboard):
    dashboard.param.update(w=2.5, label=3, seed=5, nfe=8, method="ddim", steps="karras")
    model = gmm.model_fn(MIXTURE, SCHEDULE, 3, 2.5)
    x_T = jax.random.normal(jax.random.fold_in(jax.random.key(5), 0), (N_SAMPLES, 2)) * SCHEDULE.sigma(SCHEDULE.t_max)
    x0 = sample(model, x_T, SCHEDULE, "ddim", jnp.asarray(8, jnp.int32), steps="karras")
    data = dashboard.data
    np.testing.assert_allclose(data["samples"]["x"], x0[:, 0], atol=1e-4)
    ref = reference_solve(model, x_T, SCHEDULE, rtol=module.RTOL, atol=module.RTOL).x0
    np.testing.assert_allclose(data["reference"]["y"], ref[:, 1], atol=1e-4)
    error = float(metrics.terminal_error(x0, ref))
    assert data["current"]["error"][0] == pytest.approx(error, rel=1e-3)
    assert f"{error:.3g}" in data["summary"]


def test_reference_is_accurate():
    # The dashboard's float32 reference against a float64 one at rtol = atol = 1e-10, same noise.
    ref32 = module.reference(6.0, 1, 0)["x0"][:32]
    x_T = np.asarray(module._noise(0))[:32]
    with jax.enable_x64(True):
        model = gmm.model_fn(gmm.ring(K=module.K_RING), SCHEDULE, 1, 6.0)
        ref64 = reference_solve(model, x_T.astype(np.float64), SCHEDULE, rtol=1e-10, atol=1e-10).x0
    assert float(metrics.terminal_error(ref32.astype(np.float64), np.asarray(ref64))) < 1e-3


def test_contours_hold_the_stated_mass(dashboard):
    for w, label in ((0.0, 0), (1.0, 2), (8.0, 5)):
        dashboard.param.update(w=w, label=label)
        image = np.asarray(dashboard.data["image"]["image"][0], np.float64)
        assert image.max() == pytest.approx(1.0)
        levels = dashboard.data["contours"]["level"]
        mass = np.sort([image[image >= level].sum() / image.sum() for level in levels])
        # At least the stated mass, and more by at most the grid cell at the level (a few % when peaked).
        assert np.all(mass >= np.array(module.MASSES) - 1e-6), mass
        assert np.all(mass <= np.array(module.MASSES) + 0.03), mass


def test_guided_density_is_the_closed_form(dashboard):
    # p(x)^(1-w) p(x|c)^w at w = 1 is the class-conditional density, at w = 0 the mixture.
    x = np.stack(np.meshgrid(module._AXIS, module._AXIS), axis=-1)
    for w, label in ((1.0, 6), (0.0, 6)):
        dashboard.param.update(w=w, label=label)
        expected = np.asarray(MIXTURE.log_prob(x, label=label if w == 1.0 else None), np.float64)
        expected = np.exp(expected - expected.max())
        np.testing.assert_allclose(dashboard.data["image"]["image"][0], expected, atol=1e-4)


def test_guidance_concentrates_the_samples_on_the_class(dashboard):
    # Unconditional (w = 0): about a tenth of the samples per class; guided (w = 3): nearly all.
    dashboard.param.update(w=0.0, label=4, nfe=30)
    unguided = module.class_fraction(np.stack([dashboard.data["samples"]["x"], dashboard.data["samples"]["y"]], -1), 4)
    dashboard.w = 3.0
    guided = module.class_fraction(np.stack([dashboard.data["samples"]["x"], dashboard.data["samples"]["y"]], -1), 4)
    assert 0.03 < unguided < 0.2  # binomial(256, 0.1): within 4 standard deviations
    assert guided > 0.95
    assert "In class 4's component: samples **" in dashboard.data["summary"]


def test_curves_fall_with_nfe_at_the_methods_order():
    # Unguided, steps uniform in log-SNR: DDIM is first order, DPM-Solver++(2M) second order; the
    # log-log slope over NFE 15..50 (the asymptotic regime) is close to -order.
    cur = module.curves(0.0, 0, "logSNR", METHODS_UNDER_TEST)
    tail = NFE_GRID >= 15
    for method, order in (("ddim", 1), ("dpm_solver++_2m", 2)):
        errors = cur["errors"][method]
        slope = np.polyfit(np.log(NFE_GRID[tail]), np.log(errors[tail]), 1)[0]
        assert -order - 0.5 < slope < -order + 0.5, (method, slope)
        assert not cur["unstable"][method][tail].any()


def test_instability_is_flagged_in_the_plot_and_the_text(dashboard):
    sources = rendered_sources(dashboard)
    dashboard.param.update(w=15.0, nfe=3, method="dpm_solver_3")
    cur = module.curves(15.0, 0, "logSNR", METHODS_UNDER_TEST)
    flagged = cur["unstable"]["dpm_solver_3"]
    assert flagged[0] and not flagged[-1]  # singlestep order 3 breaks at NFE 3, recovers by NFE 50
    assert cur["errors"]["dpm_solver_3"][0] > cur["threshold"]
    bad = columns(sources, "unstable_points")
    assert 3 in bad["nfe"] and len(bad["nfe"]) == sum(int(m.sum()) for m in cur["unstable"].values())
    labels = sources["curves"].data["label"]
    assert any(label.startswith("dpm_solver_3: unstable at NFE 3") for label in labels)
    summary = dashboard.data["summary"]
    assert "**Unstable at w = 15**" in summary and "dpm_solver_3 at NFE 3" in summary
    assert "this run is unstable" in summary
    dashboard.param.update(w=1.0, nfe=50, method="dpm_solver++_2m")
    assert "this run is unstable" not in dashboard.data["summary"]
    # Unguided, the first- and second-order multistep methods stay within the data at every NFE.
    calm = GuidanceDashboard(methods=("ddim", "dpm_solver++_2m"), w=0.0, nfe=3)
    assert "No method is unstable at w = 0" in calm.data["summary"]
    assert len(calm.data["unstable_points"]["nfe"]) == 0


def test_non_finite_samples_show_a_message_and_keep_the_plots(dashboard, monkeypatch):
    sources = rendered_sources(dashboard)
    real = module.sample_kernel

    def diverging(model, x_T, nfe, **kwargs):
        x = np.array(real(model, x_T, nfe, **kwargs))
        x[:5] = np.nan
        return x

    monkeypatch.setattr(module, "sample_kernel", diverging)
    dashboard.param.update(w=9.0, nfe=4, method="dpm_solver_3")
    assert dashboard.alert.visible
    assert "produced NaN or infinite samples (5 of 256)" in dashboard.alert.object
    assert "lower guidance scale" in dashboard.alert.object
    assert len(columns(sources, "samples")["x"]) == N_SAMPLES - 5  # the finite ones are drawn
    monkeypatch.setattr(module, "sample_kernel", real)
    dashboard.nfe = 20
    assert not dashboard.alert.visible


def test_bad_values_are_refused_and_failures_shown(dashboard, monkeypatch, caplog):
    with pytest.raises(ValueError):
        GuidanceDashboard(methods=METHODS_UNDER_TEST, w=-0.5)
    with pytest.raises(ValueError):
        GuidanceDashboard(methods=METHODS_UNDER_TEST, nfe=2)
    with pytest.raises(ValueError, match="methods must be"):
        GuidanceDashboard(methods=("dpm_solver_v3",))
    with pytest.raises(ValueError):
        dashboard.method = "heun"  # not among this dashboard's methods

    def broken():
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(dashboard, "compute", broken)
    with caplog.at_level(logging.ERROR, logger="solverlab.widgets"):
        assert dashboard.refresh() is False
    assert "Unexpected error" in dashboard.alert.object
    dashboard.alert.visible = False


def test_by_default_every_unfitted_method_is_offered():
    # The default dashboard offers (and draws curves of) every registered method that needs no fitted
    # statistics: methods registered by other modules are picked up.
    expected = [m for m in samplers.METHODS if samplers.fitted_type(m) is None]
    assert {"ddim", "dpm_solver++_2m", "heun"} <= set(expected)
    assert module.guidance_methods() == tuple(expected)
    assert GuidanceDashboard.param.method.objects == expected
    assert len(set(module._colors().values())) == min(len(expected), 18)


@pytest.mark.skipif(not module.digits_available(), reason="solverlab.diffusion.digits is not installed")
def test_digits_follow_the_controls(dashboard):
    first = np.asarray(dashboard.data["digits"]["image"][0])
    dashboard.label = 7
    second = np.asarray(dashboard.data["digits"]["image"][0])
    assert np.nanmin(second) >= 0.0 and np.nanmax(second) <= 1.0
    assert not np.allclose(np.nan_to_num(first), np.nan_to_num(second))
    assert np.isnan(second[8, :]).all()  # the gap between the first two rows of digits
    # Guided towards 7 at w = 3 with 10 steps of DPM-Solver++(2M), most digits read as 7s.
    recognised = int(dashboard.data["summary"].split("digit classifier reads **")[1].split(" of")[0])
    assert recognised >= 10, dashboard.data["summary"]
    assert "as a 7." in dashboard.data["summary"]
