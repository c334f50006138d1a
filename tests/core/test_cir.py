"""The CIR solvers and experiment (Jelincic, Foster & Kidger 2024): steps against independent
computations, positivity where theory gives it, the generic-solver trap, orders, helpers, bad input."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import solve_ivp

from solverlab import sde
from solverlab.brownian import BrownianIncrement, BrownianTree
from solverlab.sde import cir

from .stats import Z

MILD = (1.0, 1.0, 1.0)  # 4ab = 4 > sigma^2 = 1 and Feller's 2ab >= sigma^2 holds
HARD = cir.PAPER_ARGS  # (1, 1, 2.2): b~ = -0.21 < 0
STRAT = cir.cir_sde()


def _step(solver, x, h, w, args, hh=0.0):
    inc = BrownianIncrement(W=jnp.asarray(w), H=jnp.asarray(hh))
    return float(solver.step(STRAT, 0.0, jnp.asarray(x), h, inc, args)[0])


def test_stratonovich_form_is_the_ito_drift_less_half_g_dg(x64):
    a, b, sigma = 0.7, 1.3, 2.2
    x = jnp.linspace(0.05, 3.0, 7)
    g, dg = jax.jvp(lambda y: STRAT.diffusion(0.0, y, (a, b, sigma)), (x,), (jnp.ones_like(x),))
    ito = cir.cir_sde("ito").drift(0.0, x, (a, b, sigma))
    np.testing.assert_allclose(STRAT.drift(0.0, x, (a, b, sigma)), ito - 0.5 * g * dg, rtol=1e-12)
    assert cir.b_tilde((a, b, sigma)) == pytest.approx(b - sigma**2 / (4 * a))
    assert cir.b_tilde(HARD) == pytest.approx(-0.21)
    with pytest.raises(ValueError, match=r"calculus must be one of ito, stratonovich, got 'strat'"):
        cir.cir_sde("strat")


@pytest.mark.parametrize("args", [MILD, HARD])
@pytest.mark.parametrize("x0, h, w", [(1.0, 0.5, 0.3), (0.02, 0.01, -0.05), (2.5, 0.1, 0.4)])
def test_drift_implicit_euler_step_is_the_root_of_its_implicit_equation(args, x0, h, w, x64):
    a, _, sigma = args
    bt = cir.b_tilde(args)
    x1 = _step(sde.DriftImplicitEulerCIR(), x0, h, w, args)
    # Independently: the larger real root of (2 + a h) Y^2 - 2 T Y - a b~ h = 0, T = sqrt(x0) + sigma w / 2.
    t = math.sqrt(x0) + 0.5 * sigma * w
    roots = np.roots([2.0 + a * h, -2.0 * t, -a * bt * h])
    if np.all(np.isreal(roots)):
        y1 = float(np.max(roots.real))
        # ... which solves Y1 = Y0 + (a b~ / (2 Y1) - a Y1 / 2) h + sigma W / 2.
        assert y1 == pytest.approx(math.sqrt(x0) + (a * bt / (2 * y1) - a * y1 / 2) * h + 0.5 * sigma * w)
    else:  # complex roots (only when b~ < 0): the paper clips the discriminant at zero
        y1 = t / (2.0 + a * h)
    assert x1 == pytest.approx(y1**2, rel=1e-12)


def _flow_by_ode(x0, h, w, hh, args):
    """HOStS's five pieces integrated numerically: drift ODE over times, then the noise ODE
    dx/ds = sigma sqrt(x) w over s in [0, 1], with w = W/2 +- sqrt(3) H."""
    a, _, sigma = args
    bt = cir.b_tilde(args)
    tau1, tau2 = (3 - math.sqrt(3)) / 6 * h, h / math.sqrt(3)

    def drift(x, tau):
        return solve_ivp(lambda s, y: a * (bt - y), (0, tau), [x], rtol=1e-12, atol=1e-14).y[0, -1]

    def noise(x, v):
        return solve_ivp(lambda s, y: sigma * np.sqrt(np.maximum(y, 0)) * v, (0, 1), [x],
                         rtol=1e-12, atol=1e-14).y[0, -1]

    x = drift(x0, tau1)
    x = noise(x, w / 2 + math.sqrt(3) * hh)
    x = drift(x, tau2)
    x = noise(x, w / 2 - math.sqrt(3) * hh)
    return drift(x, tau1)


@pytest.mark.parametrize("args", [MILD, HARD])
def test_hosts_step_is_the_composition_of_the_exact_flows(args, x64):
    # Inputs where sqrt(x) + sigma w / 2 stays positive, so the noise ODE has a unique solution.
    for x0, h, w, hh in [(1.0, 0.25, 0.3, 0.05), (0.5, 0.1, -0.1, 0.02), (2.0, 0.5, 0.6, -0.1)]:
        x1 = _step(sde.HOStS(), x0, h, w, args, hh)
        assert x1 == pytest.approx(_flow_by_ode(x0, h, w, hh, args), rel=1e-8)
    # Without noise it is the exact solution of the ODE dx = a (b - x) dt.
    a, b = 0.8, 1.5
    x1 = _step(sde.HOStS(), 0.3, 0.7, 0.0, (a, b, 1e-300))
    assert x1 == pytest.approx(math.exp(-a * 0.7) * 0.3 + (1 - math.exp(-a * 0.7)) * b, rel=1e-13)


X0S = jnp.asarray([0.0, 1e-12, 1e-4, 0.3, 1.0, 4.0])
WS = jnp.linspace(-6.0, 6.0, 25)  # in units of sqrt(h)


def _all_steps(solver, args, h):
    x, w = jnp.meshgrid(X0S, WS * math.sqrt(h))
    hh = 0.3 * w  # any H: the bound does not depend on it
    inc = BrownianIncrement(W=w, H=hh)
    return np.asarray(solver.step(STRAT, 0.0, x, h, inc, args)[0])


@pytest.mark.parametrize("h", [1.0, 2.0**-5, 2.0**-15])
def test_positivity_when_4ab_exceeds_sigma_squared(h, x64):
    args = (1.0, 1.0, 1.5)  # 4ab = 4 > 2.25: b~ > 0 (Feller's 2ab >= sigma^2 fails: X reaches 0)
    assert np.all(_all_steps(sde.DriftImplicitEulerCIR(), args, h) > 0)  # the positive root
    assert np.all(_all_steps(sde.HOStS(), args, h) >= 0)  # convex combinations of x >= 0 and b~ >= 0


@pytest.mark.parametrize("h", [1.0, 2.0**-5, 2.0**-15])
def test_with_sigma_2_2_only_the_weaker_bounds_hold(h, x64):
    bt = cir.b_tilde(HARD)
    die = _all_steps(sde.DriftImplicitEulerCIR(), HARD, h)
    assert np.all(die >= 0)  # X = Y^2 ...
    # ... but the discriminant can be negative; then Y = T / (2 + a h) (and X = 0 when T = 0).
    w = -1e-3 * math.sqrt(h)
    t = 0.5 * HARD[2] * w  # from X = 0
    assert t**2 + (2 + h) * bt * h < 0
    assert _step(sde.DriftImplicitEulerCIR(), 0.0, h, w, HARD) == pytest.approx((t / (2 + h)) ** 2)
    hosts = _all_steps(sde.HOStS(), HARD, h)
    floor = (1 - math.exp(-(3 - math.sqrt(3)) / 6 * h)) * bt
    assert np.all(hosts >= floor * (1 + 1e-12)) and np.any(hosts < 0)


def test_a_generic_solver_is_trapped_below_zero(x64):
    # Below zero the Stratonovich CIR has no noise and its drift a (b~ - X) rests at b~ < 0.
    tree = BrownianTree(0.0, 4.0, 2.0**-8, (), jax.random.key(0), levy_area="space-time")
    heun = sde.solve(STRAT, sde.Heun(), jnp.asarray(-1e-3), 0.0, 4.0, dt=2.0**-6, brownian=tree,
                     args=HARD)
    ys, bt = np.asarray(heun.ys), cir.b_tilde(HARD)
    # Every step is the noiseless ODE x' = a (b~ - x): x(t) = b~ + (x0 - b~) e^{-at}, whatever W did.
    assert np.all(ys < 0) and ys[-1] == pytest.approx(bt + (-1e-3 - bt) * math.exp(-4.0), rel=1e-4)
    inc = lambda w: BrownianIncrement(W=jnp.asarray(w), H=jnp.asarray(0.0))
    steps = [float(sde.Heun().step(STRAT, 0.0, jnp.asarray(-0.01), 0.1, inc(w), HARD)[0]) for w in (-1, 1)]
    assert steps[0] == steps[1]  # the noise does not act below zero
    # HOStS on the same tree comes straight back: its noise flow (sqrt(max(x, 0)) + sigma w / 2)^2.
    hosts = sde.solve(STRAT, sde.HOStS(), jnp.asarray(-1e-3), 0.0, 4.0, dt=2.0**-6, brownian=tree,
                      args=HARD)
    assert np.mean(np.asarray(hosts.ys) > 0) > 0.5


@pytest.mark.parametrize("solver, order", [(sde.DriftImplicitEulerCIR(), 1.0), (sde.HOStS(), 1.5)])
def test_strong_order_on_a_mild_cir(solver, order, x64):
    conv = sde.strong_convergence(STRAT, solver, jnp.ones(()), 0.0, 1.0, [2.0**-k for k in range(2, 7)],
                                  jax.random.key(1), 150, args=MILD, reference_solver=sde.HOStS(),
                                  reference_dt=2.0**-10)
    lo, hi = conv.ci
    assert lo - 0.1 < order < hi + 0.1, str(conv)
    assert np.all(np.diff(conv.errors) < 0)


def test_hosts_has_the_mean_and_variance_of_the_cir_law(x64):
    a, b, sigma = MILD
    x0, t1, n = 0.5, 1.0, 3000
    e = math.exp(-a * t1)
    mean = b + (x0 - b) * e
    var = x0 * sigma**2 / a * (e - e * e) + b * sigma**2 / (2 * a) * (1 - e) ** 2
    keys = jax.random.split(jax.random.key(2), n)
    y1 = jax.vmap(lambda k: sde.solve(STRAT, sde.HOStS(), jnp.asarray(x0), 0.0, t1, dt=2.0**-4,
                                      key=k, args=MILD, check=False).y1)(keys)
    y1 = np.asarray(y1)
    assert abs(y1.mean() - mean) < Z * math.sqrt(var / n)
    # SE of a sample variance: sqrt((m4 - var^2) / n), estimated from the sample.
    se_var = math.sqrt(np.var((y1 - y1.mean()) ** 2) / n)
    assert abs(y1.var() - var) < Z * se_var


def test_the_state_rule_sets_each_step(x64):
    ctol = 2.0**-3
    ctrl = cir.state_controller(ctol)
    assert ctrl == cir.state_controller(ctol)  # equal controllers: one compilation
    tree = BrownianTree(0.0, 4.0, 2.0**-16, (), jax.random.key(3), levy_area="space-time")
    sol = sde.solve(STRAT, sde.HOStS(), jnp.ones(()), 0.0, 4.0, dt=1.0, brownian=tree, args=HARD,
                    controller=ctrl, max_steps=2**14)
    n = int(sol.n_steps)
    ts, ys = np.asarray(sol.ts[: n + 1]), np.asarray(sol.ys[: n + 1])
    expected = np.clip((np.maximum(ys[:-1], 0) * ctol) ** (2 / 3), 2.0**-15, 1.0)
    np.testing.assert_allclose(np.diff(ts)[:-1], expected[:-1], rtol=1e-9)
    assert int(sol.stats["rejected"]) == 0 and ts[-1] == pytest.approx(4.0)


def test_the_papers_controller_rejects_when_the_state_falls(x64):
    ctol = 2.0**-3
    ctrl = cir.state_controller(ctol, reject=True)
    tree = BrownianTree(0.0, 4.0, 2.0**-16, (), jax.random.key(3), levy_area="space-time")
    sol = sde.solve(STRAT, sde.DriftImplicitEulerCIR(), jnp.ones(()), 0.0, 4.0, dt=1.0,
                    brownian=tree, args=HARD, controller=ctrl, max_steps=2**14)
    n = int(sol.n_steps)
    ts, ys = np.asarray(sol.ts[: n + 1]), np.asarray(sol.ys[: n + 1])
    rule = lambda x: np.clip((np.maximum(x, 0) * ctol) ** (2 / 3), 2.0**-15, 1.0)
    assert np.all(np.diff(ts) < 1.1 * rule(np.minimum(ys[:-1], ys[1:])) * (1 + 1e-9))
    assert int(sol.stats["rejected"]) > 0


def test_cir_convergence_returns_levels_errors_and_an_order(x64):
    res = cir.cir_convergence(sde.HOStS(), key=jax.random.key(4), ctols=[2.0**-2, 2.0**-1],
                              n_paths=8, t1=1.0)
    assert res.mode == "adaptive" and res.levels.tolist() == [0.5, 0.25] and res.reference == 0.0625
    assert res.path_errors.shape == res.path_steps.shape == (8, 2)
    assert res.failed == 0 and res.failures == {}
    assert res.mean_steps[0] < res.mean_steps[1] and np.all(res.errors > 0)
    assert np.isfinite(res.order) and res.ci[0] <= res.ci[1]
    heun = cir.cir_convergence(sde.Heun(), key=jax.random.key(4), atols=[2.0**-2, 2.0**-4],
                               n_paths=8, t1=1.0)
    assert heun.mode == "pi" and heun.below_zero.shape == (2,)
    assert np.all(heun.ends_below_zero <= heun.below_zero)  # ending below zero means it went there
    const = cir.cir_convergence(sde.DriftImplicitEulerCIR(), key=jax.random.key(4), dts=[0.25, 0.5],
                                n_paths=8, t1=1.0)
    assert const.mean_steps.tolist() == [2.0, 4.0] and np.all(const.below_zero == 0)
    table = cir.format_table([res, heun, const])
    assert "HOStS" in table and "stochastic Heun" in table and "constant" in table


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(args=(0.0, 1.0, 2.2)), r"a must lie in \(0, inf\), got 0"),
        (dict(args=(1.0, -1.0, 2.2)), r"b must lie in \(0, inf\), got -1"),
        (dict(args=(1.0, 1.0, 0.0)), r"sigma must lie in \(0, inf\), got 0"),
        (dict(args=(1.0, 1.0)), r"args must be \(a, b, sigma\)"),
        (dict(ctols=[0.5, 0.0]), r"ctol must lie in \(0, inf\), got 0"),
        (dict(ctols=[0.5, -2.0]), r"ctol must lie in \(0, inf\), got -2"),
        (dict(ctols=None, dts=[0.5, 8.0]), r"dt must lie in \(0, 4\], got 8"),
        (dict(dts=[0.5, 0.25]), r"give exactly one of ctols, dts, atols; got ctols, dts"),
        (dict(ctols=None, atols=[0.1, 0.01]), r"has no embedded error estimate"),
        (dict(ctols=[0.5]), r"ctol must hold at least 2 values"),
        (dict(x0=-1.0), r"x0 must lie in \[0, inf\), got -1"),
        (dict(n_paths=1), r"n_paths must be an int >= 2, got 1"),
    ],
)
def test_bad_input_is_named_before_anything_compiles(kwargs, match):
    call = dict(key=jax.random.key(0), ctols=[0.5, 0.25], n_paths=4)
    call.update(kwargs)
    with pytest.raises(ValueError, match=match):
        cir.cir_convergence(sde.DriftImplicitEulerCIR(), **call)


def test_bad_solver_use():
    with pytest.raises(ValueError, match=r"ctol must lie in \(0, inf\), got 0"):
        cir.state_controller(0.0)
    with pytest.raises(ValueError, match=r"HOStS \(CIR\) solves only the CIR SDE"):
        other = sde.SDE(lambda t, y, a: y, lambda t, y, a: y, "diagonal", "stratonovich")
        sde.solve(other, sde.HOStS(), jnp.ones(()), 0.0, 1.0, dt=0.1, key=jax.random.key(0),
                  args=HARD)
    with pytest.raises(ValueError, match=r"a must lie in \(0, inf\), got -1"):
        cir.check_cir_args((-1.0, 1.0, 1.0))


def test_parameters_are_traced_so_a_slider_never_recompiles(x64):
    @jax.jit
    def final(args):
        return sde.solve(STRAT, sde.HOStS(), jnp.ones(()), 0.0, 1.0, dt=2.0**-4,
                         key=jax.random.key(5), args=args, check=False).y1

    first = final((1.0, 1.0, 2.2))
    second = final((1.0, 1.0, 1.5))
    assert final._cache_size() == 1 and float(first) != float(second)
