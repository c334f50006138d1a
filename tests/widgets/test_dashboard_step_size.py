"""The step-size dashboard without a browser: parameters in, plot data and messages out."""

import jax
import jax.numpy as jnp
import numpy as np
import panel as pn
import pytest

from solverlab import sde
from solverlab.brownian import BrownianTree, coarsen
from .rendering import rendered_sources
from solverlab.widgets import DASHBOARDS, StepSizeDashboard
from solverlab.widgets import step_size as ss


@pytest.fixture
def dashboard():
    return StepSizeDashboard()


def snapshot(sources) -> dict[str, dict]:
    def column(values):
        if len(values) and isinstance(values[0], str):
            return list(values)
        if len(values) and np.ndim(values[0]) == 1:  # multi_line: one array per line
            return np.concatenate([np.asarray(v, float) for v in values])
        return np.asarray(values, float)

    return {name: {k: column(v) for k, v in cds.data.items()} for name, cds in sources.items()}


def same(x: dict, y: dict) -> bool:
    def equal(a, b):
        if isinstance(a, list):
            return a == b
        return np.shape(a) == np.shape(b) and np.allclose(a, b, equal_nan=True, rtol=0, atol=1e-7)

    return x.keys() == y.keys() and all(equal(x[k], y[k]) for k in x)


def tree_of(key) -> BrownianTree:
    """The dashboard's tree for ``key``: the path shown has key(seed), the sweep's ss.sweep_keys()."""
    return BrownianTree(0.0, ss.T, ss.TREE_TOL, (), key, levy_area="space-time")


def test_plots_follow_the_parameters(dashboard):
    sources = rendered_sources(dashboard)
    assert {"solution", "reference", "curves", "slopes", "points", "step"} <= sources.keys()
    start = snapshot(sources)
    assert len(start["solution"]["t"]) == 33  # h = 2^-5: 32 steps
    assert len(start["reference"]["t"]) == ss.DISPLAY_STEPS + 1
    assert len(sources["curves"].data["xs"]) == 3  # GBM: Euler-Maruyama, Milstein, Heun

    dashboard.log2_dt = -7.0  # a new step: a new solution, same path, same sweep
    after_dt = snapshot(sources)
    assert len(after_dt["solution"]["t"]) == 129
    assert not same(start["solution"], after_dt["solution"])
    for name in ("reference", "curves", "slopes", "points"):
        assert same(start[name], after_dt[name]), name
    np.testing.assert_allclose(after_dt["step"]["dt"], [2.0**-7])
    # The marker: this path's error at T against the exact solution.
    error = abs(after_dt["solution"]["y"][-1] - after_dt["reference"]["y"][-1])
    np.testing.assert_allclose(after_dt["step"]["error"], [error], rtol=1e-6)

    dashboard.seed = 4  # a new path and its reference; the sweep's fixed trees stay
    after_seed = snapshot(sources)
    for name in ("solution", "reference"):
        assert not same(after_dt[name], after_seed[name]), name
    for name in ("curves", "slopes", "points"):
        assert same(after_dt[name], after_seed[name]), name

    dashboard.sigma = 0.8  # a new SDE: a new sweep
    assert not same(after_seed["curves"], snapshot(sources)["curves"])

    dashboard.equation = "OU"  # four solvers apply
    assert len(sources["curves"].data["xs"]) == 4
    assert not dashboard.alert.visible


def test_solution_starts_and_ends_where_the_reference_does(dashboard):
    for equation, solver in (("GBM", "Heun"), ("OU", "ShARK"), ("CIR", "HOStS")):
        dashboard.param.update(equation=equation, solver=solver, log2_dt=-9.0)
        data = dashboard.data
        assert data["solution"]["t"][0] == 0.0 and data["solution"]["t"][-1] == pytest.approx(ss.T)
        assert data["solution"]["y"][0] == data["reference"]["y"][0] == ss.Y0
        # At h = 2^-9 every one of these is close to its reference at T (float32, sigma = 0.5).
        assert abs(data["solution"]["y"][-1] - data["reference"]["y"][-1]) < 5e-3, equation


@pytest.mark.parametrize("equation", ["GBM", "OU", "CIR"])
def test_sweep_orders_agree_with_theory(equation):
    # sigma = 0.5 (the default); CIR meets Feller's condition there, so theory's orders hold.
    swept = ss.sweep(equation, 0.5)
    assert set(swept["orders"]) == set(ss.EQUATIONS[equation].solvers)
    for name, (order, (lo, hi), used) in swept["orders"].items():
        theory, _ = ss.EQUATIONS[equation].theory(name)
        if equation == "CIR" and name == "Euler-Maruyama":
            theory = 0.5  # nominal; EM's error constant shrinks with X away from 0, so it fits a bit higher
            assert lo - 0.1 < theory < hi + 0.2, (name, order, lo, hi)
            continue
        assert used >= 4, (name, used)
        assert lo - 0.1 < theory < hi + 0.1, (equation, name, order, lo, hi)
        errors = swept["errors"][name]
        assert errors[0] > 10 * errors[used - 1]


def test_high_volatility_cir_loses_its_orders_and_traps_heun_below_zero():
    mild, wild = ss.sweep("CIR", 0.5), ss.sweep("CIR", 2.2)
    for name in ("drift-implicit Euler", "HOStS", "Milstein"):
        assert wild["orders"][name][0] < mild["orders"][name][0] - 0.3, name
    # Seed 1's path: Heun's Stratonovich drift holds it below zero at b~ = 1 - 2.2^2/4 = -0.21, the
    # CIR solvers keep it non-negative.
    dashboard = StepSizeDashboard(equation="CIR", solver="Heun", sigma=2.2, seed=1, log2_dt=-8.0)
    assert dashboard.data["solution"]["y"][-1] < -0.05
    assert "went below zero" in dashboard.data["summary"] and "trapped" in dashboard.data["summary"]
    dashboard.solver = "HOStS"
    assert dashboard.data["solution"]["y"].min() > -1e-3
    assert "went below zero" not in dashboard.data["summary"]


def test_adaptive_steps_report_their_statistics(dashboard):
    dashboard.param.update(adaptive=True, log10_tol=-2.5)
    stats = dashboard.data["summary"]
    assert "PI controller, rtol = atol = 3.2e-03" in stats and "rejected" in stats
    t = dashboard.data["solution"]["t"]
    assert t[-1] == pytest.approx(ss.T) and np.all(np.diff(t) > 0)
    assert np.ptp(np.diff(t)) > 0  # the steps differ
    dashboard.param.update(equation="CIR", solver="HOStS")
    assert "state rule h = (X c)^(2/3), c = 3.2e-03" in dashboard.data["summary"]


def test_invalid_combinations_show_a_message_and_keep_the_plots(dashboard):
    sources = rendered_sources(dashboard)
    good = snapshot(sources)
    cases = [
        (dict(solver="ShARK"), "ShARK cannot solve GBM: ShARK handles noise additive"),
        (dict(solver="Euler-Maruyama", adaptive=True), "no embedded error estimate"),
        (dict(equation="OU", solver="HOStS", adaptive=False), "HOStS cannot solve OU"),
    ]
    for move, message in cases:
        dashboard.param.update(**move)
        assert dashboard.alert.visible
        assert message in dashboard.alert.object
        assert "pick" in dashboard.alert.object  # says what to choose instead
        assert all(same(good[name], data) for name, data in snapshot(sources).items())
    dashboard.param.update(solver="ShARK")
    assert not dashboard.alert.visible
    assert not same(good["curves"], snapshot(sources)["curves"])


def test_a_failed_solve_shows_the_solver_error(dashboard):
    # Heun's error estimate is O(h) for multiplicative noise: at a tight tolerance and high volatility
    # the PI controller shrinks the step below dt_min.
    dashboard.param.update(adaptive=True, sigma=2.5, log10_tol=-3.5)
    assert dashboard.alert.visible
    assert "step size underflow" in dashboard.alert.object and "raise log10 tol" in dashboard.alert.object
    # The state rule takes tiny steps near X = 0, where seed 1's path spends its time at sigma = 2.2.
    dashboard.param.update(sigma=2.2, equation="CIR", solver="HOStS", log10_tol=-3.0, seed=1)
    assert dashboard.alert.visible
    assert "max_steps reached" in dashboard.alert.object and "at most 1024 steps" in dashboard.alert.object
    dashboard.log10_tol = -1.0
    assert not dashboard.alert.visible


def test_bad_initial_values_raise_at_construction():
    with pytest.raises(ValueError, match="ShARK cannot solve GBM"):
        StepSizeDashboard(solver="ShARK")
    with pytest.raises(ValueError):  # the parameter's bounds are the validation
        StepSizeDashboard(log2_dt=-12.0)


def test_no_recompiles_after_warm_up(dashboard):
    rendered_sources(dashboard)
    assert dashboard.compile_count() == 3  # every SDE, solver and step mode is a branch of three kernels
    # What a browser sends: ints where the value looks integral, floats elsewhere.
    moves = [
        {"log2_dt": -3}, {"log2_dt": -9.75}, {"log2_dt": -10}, {"seed": 7}, {"sigma": 1}, {"sigma": 0.3},
        {"adaptive": True}, {"log10_tol": -3}, {"log10_tol": -0.7}, {"equation": "OU"}, {"solver": "ShARK"},
        {"log2_dt": -2}, {"equation": "CIR", "solver": "HOStS"}, {"sigma": 2.2}, {"log10_tol": -1},
        {"solver": "drift-implicit Euler"}, {"adaptive": False}, {"solver": "Milstein"},
        {"solver": "Euler-Maruyama"}, {"equation": "GBM"}, {"seed": 999},
    ]
    for move in moves:
        dashboard.param.update(**move)
        assert not dashboard.alert.visible, (move, dashboard.alert.object)
    assert dashboard.compile_count() == 3


def test_constant_steps_are_the_cores_solve():
    seed, dt, sigma = 3, 2.0**-5, 0.5
    eq, solver = ss.EQUATIONS["GBM"], ss.SOLVERS["Milstein"]

    def core_solve(tree):
        return sde.solve(eq.form(solver), solver, jnp.float32(1.0), 0.0, ss.T, dt=dt, brownian=tree,
                         args=jnp.float32(sigma))

    core = core_solve(tree_of(jax.random.key(seed)))
    out = ss.path_kernel(np.int32(seed), np.float32(-5.0), np.float32(-2.0), np.float32(sigma), np.int32(0),
                         np.int32(1), np.bool_(False))
    np.testing.assert_array_equal(out["ys"][:33], core.ys)
    np.testing.assert_array_equal(out["ts"][:33], core.ts)
    assert np.isnan(out["ys"][33:]).all() and int(out["nfe"]) == int(core.stats["nfe"])
    # The sweep's error at this step on its first tree is the same solve against the exact solution.
    errors = ss.sweep_kernel(np.float32(sigma), np.int32(0))
    tree = tree_of(ss.sweep_keys()[0])
    exact = eq.exact(ss.T, tree.evaluate(0.0, ss.T).W, sigma)
    error = abs(float(core_solve(tree).y1 - exact))
    assert float(errors[0, 1, list(ss.SWEEP_DTS).index(dt)]) == pytest.approx(error, rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("equation, solver", [("OU", "ShARK"), ("CIR", "HOStS")])
def test_adaptive_steps_are_the_cores_solve(equation, solver):
    seed, log10_tol, sigma = 2, -2.0, 0.5
    eq, method = ss.EQUATIONS[equation], ss.SOLVERS[solver]
    tol = float(np.float32(10.0**log10_tol))
    controller = ss.controller(solver, tol)
    core = sde.solve(eq.form(method), method, jnp.float32(1.0), 0.0, ss.T, dt=2.0**-5,
                     brownian=tree_of(jax.random.key(seed)),
                     args=eq.args(jnp.float32(sigma)), controller=controller, max_steps=ss.MAX_STEPS)
    out = ss.path_kernel(np.int32(seed), np.float32(-5.0), np.float32(log10_tol), np.float32(sigma),
                         np.int32(list(ss.EQUATIONS).index(equation)), np.int32(list(ss.SOLVERS).index(solver)),
                         np.bool_(True))
    n = int(core.n_steps)
    assert int(out["n_steps"]) == n and int(out["rejected"]) == int(core.stats["rejected"]) > 0
    np.testing.assert_allclose(out["ts"][: n + 1], core.ts[: n + 1], rtol=1e-6)
    np.testing.assert_allclose(out["ys"][: n + 1], core.ys[: n + 1], rtol=1e-5, atol=1e-6)


def test_fitted_orders_are_the_cores_fit():
    rng = np.random.default_rng(0)
    path_errors = ss.SWEEP_DTS**1.3 * np.exp(rng.normal(0.0, 0.3, (ss.N_PATHS, len(ss.SWEEP_DTS))))
    order, (lo, hi) = ss.fit_orders(ss.SWEEP_DTS, path_errors)
    core_order, (core_lo, core_hi) = sde.fit_order(ss.SWEEP_DTS, path_errors)
    assert order == pytest.approx(core_order, abs=1e-12)
    assert lo == pytest.approx(core_lo, abs=0.03) and hi == pytest.approx(core_hi, abs=0.03)
    assert np.isnan(ss.fit_orders(ss.SWEEP_DTS[:2], path_errors[:, :2])[0])


def test_registry_builds_servable_dashboards():
    dashboard = DASHBOARDS["step_size"]()
    assert isinstance(dashboard, StepSizeDashboard)
    assert pn.panel(dashboard).get_root() is not None


def test_joined_steps_are_the_cores_coarsening():
    @jax.jit
    def increments(key):
        tree = tree_of(key)
        k = jnp.arange(16.0)
        fine = tree.evaluate(k / 16, (k + 1) / 16)
        direct = tree.evaluate(k[:4] / 4, (k[:4] + 1) / 4)
        return ss.join_pairs(ss.join_pairs(fine)), coarsen(fine, 1 / 16, 4), direct

    joined, core, direct = increments(jax.random.key(0))
    for increment in (core, direct):
        np.testing.assert_allclose(joined.W, increment.W, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(joined.H, increment.H, rtol=1e-5, atol=1e-6)
