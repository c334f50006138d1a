"""SDE solvers: strong orders as fitted intervals, adaptive steps on the tree, errors that say what happened."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from solverlab import SolverError, sde
from solverlab.brownian import BrownianTree

MU, SIGMA = 0.5, 0.8
DTS = [2.0**-k for k in range(3, 8)]


def gbm(calculus):
    return sde.SDE(lambda t, y, a: MU * y, lambda t, y, a: SIGMA * y, "diagonal", calculus)


def gbm_exact(calculus):
    shift = MU - 0.5 * SIGMA**2 if calculus == "ito" else MU
    return lambda t, y0, w: y0 * jnp.exp(shift * t + SIGMA * w)


OU = sde.SDE(lambda t, y, a: -2.0 * y, lambda t, y, a: 0.5 * jnp.ones_like(y), "additive")
NONLINEAR = sde.SDE(lambda t, y, a: jnp.sin(y) - y**3, lambda t, y, a: 0.5 * jnp.ones_like(y), "additive")


@pytest.mark.parametrize(
    "solver, calculus, order",
    [
        (sde.EulerMaruyama(), "ito", 0.5),
        (sde.Milstein(), "ito", 1.0),
        (sde.Milstein(), "stratonovich", 1.0),
        (sde.Heun(), "stratonovich", 1.0),
    ],
)
def test_strong_order_on_gbm_against_the_exact_solution(solver, calculus, order, x64):
    conv = sde.strong_convergence(gbm(calculus), solver, jnp.ones(()), 0.0, 1.0, DTS,
                                  jax.random.key(0), 300, exact=gbm_exact(calculus))
    lo, hi = conv.ci
    assert lo - 0.1 < order < hi + 0.1, str(conv)
    assert np.all(np.diff(conv.errors) < 0)  # errors shrink with the step


@pytest.mark.parametrize(
    "solver, equation, order",
    [
        (sde.EulerMaruyama(), NONLINEAR, 1.0),
        (sde.Heun(), NONLINEAR, 1.0),
        (sde.ShARK(), NONLINEAR, 1.5),
    ],
)
def test_strong_order_with_additive_noise_against_a_fine_reference(solver, equation, order, x64):
    conv = sde.strong_convergence(equation, solver, jnp.ones(()), 0.0, 1.0, DTS, jax.random.key(1),
                                  200, reference_solver=sde.ShARK(), reference_dt=2.0**-11)
    lo, hi = conv.ci
    assert lo - 0.15 < order < hi + 0.15, str(conv)


def test_constant_step_solution_and_stats(x64):
    tree = BrownianTree(0.0, 1.0, 1e-3, (3,), jax.random.key(2))
    sol = sde.solve(gbm("ito"), sde.EulerMaruyama(), jnp.ones(3), 0.0, 1.0, dt=0.01, brownian=tree)
    assert sol.ts.shape == (101,) and sol.ys.shape == (101, 3)
    np.testing.assert_allclose(sol.ys[-1], sol.y1)
    assert int(sol.stats["accepted"]) == 100 and int(sol.stats["nfe"]) == 100
    assert int(sol.result) == 0
    # The first step is Euler-Maruyama on the tree's increment.
    w = tree.evaluate(0.0, 0.01).W
    np.testing.assert_allclose(sol.ys[1], 1 + MU * 0.01 + SIGMA * w, rtol=1e-12)


def test_adaptive_heun_converges_on_one_path_and_rejects_on_the_same_tree(x64):
    tree = BrownianTree(0.0, 1.0, 2.0**-20, (), jax.random.key(3))
    exact = gbm_exact("stratonovich")(1.0, 1.0, tree.evaluate(0.0, 1.0).W)
    errors, steps = [], []
    for tol in [1e-2, 1e-3, 1e-4]:
        ctrl = sde.PIController(rtol=tol, atol=tol, dt_min=2.0**-20)
        sol = sde.solve(gbm("stratonovich"), sde.Heun(), jnp.ones(()), 0.0, 1.0, dt=0.1,
                        brownian=tree, controller=ctrl, max_steps=20000)
        n = int(sol.n_steps)
        assert float(sol.ts[n]) == pytest.approx(1.0) and np.isnan(sol.ys[n + 1 :]).all()
        assert int(sol.stats["rejected"]) > 0
        assert int(sol.stats["nfe"]) == 2 * (n + int(sol.stats["rejected"]))
        errors.append(abs(float(sol.y1) - float(exact)))
        steps.append(n)
    assert errors[2] < errors[0] / 10 and steps[0] < steps[1] < steps[2]


def test_solve_vmaps_over_keys_and_traced_args():
    eq = sde.SDE(lambda t, y, a: a * y, lambda t, y, a: 0.3 * y, "diagonal")

    @jax.jit
    def final(key, mu):
        return sde.solve(eq, sde.EulerMaruyama(), jnp.ones(()), 0.0, 1.0, dt=0.05, key=key,
                         args=mu, check=False).y1

    keys = jax.random.split(jax.random.key(0), 4000)
    y1 = jax.vmap(final, in_axes=(0, None))(keys, 0.2)
    # E[Y_1] = exp(mu) for Ito GBM; Euler-Maruyama's mean is (1 + mu h)^n exactly.
    se = float(np.std(y1)) / np.sqrt(4000)
    assert abs(float(np.mean(y1)) - (1 + 0.2 * 0.05) ** 20) < 5 * se
    final(keys[0], 0.5)
    assert final._cache_size() == 1  # a new drift parameter does not recompile


def test_blow_up_and_max_steps_raise_solver_error():
    explode = sde.SDE(lambda t, y, a: y**3, lambda t, y, a: 0.1 * jnp.ones_like(y), "additive")
    with pytest.raises(SolverError, match=r"NaN or infinite; reduce dt"):
        sde.solve(explode, sde.EulerMaruyama(), jnp.full((), 3.0), 0.0, 2.0, dt=0.1, key=jax.random.key(0))
    ctrl = sde.PIController(rtol=1e-6, atol=1e-6)
    with pytest.raises(SolverError, match=r"max_steps reached before t1; raise max_steps"):
        sde.solve(gbm("stratonovich"), sde.Heun(), jnp.ones(()), 0.0, 1.0, dt=0.1,
                  key=jax.random.key(0), controller=ctrl, max_steps=10)
    sol = sde.solve(gbm("stratonovich"), sde.Heun(), jnp.ones(()), 0.0, 1.0, dt=0.1,
                    key=jax.random.key(0), controller=ctrl, max_steps=10, check=False)
    assert int(sol.result) == 1 and sde.RESULTS[1].startswith("max_steps")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(dt=0.0), r"dt must lie in \(0, 1\], got 0"),
        (dict(dt=-0.1), r"dt must lie in \(0, 1\], got -0.1"),
        (dict(t1=0.0), r"t1 must be greater than t0 = 0, got t1 = 0"),
        (dict(solver=sde.ShARK()), r"ShARK handles noise additive, got noise='diagonal'"),
        (dict(solver=sde.Heun()), r"stochastic Heun converges to the stratonovich solution"),
        (dict(controller=sde.PIController()), r"Euler-Maruyama has no embedded error estimate"),
        (dict(max_steps=0), r"max_steps must be a positive int"),
        (dict(key=None), r"give key"),
        (dict(solver="euler"), r"solver must be a solverlab.sde solver"),
    ],
)
def test_bad_solve_arguments(kwargs, match):
    call = dict(sde=gbm("ito"), solver=sde.EulerMaruyama(), y0=jnp.ones(2), t0=0.0, t1=1.0, dt=0.1,
                key=jax.random.key(0))
    call.update(kwargs)
    with pytest.raises(ValueError, match=match):
        sde.solve(**call)


def test_bad_sde_definitions():
    with pytest.raises(ValueError, match=r"noise must be one of diagonal, additive, general, got 'diag'"):
        sde.SDE(lambda t, y, a: y, lambda t, y, a: y, "diag")
    with pytest.raises(ValueError, match=r"calculus must be one of ito, stratonovich"):
        sde.SDE(lambda t, y, a: y, lambda t, y, a: y, "diagonal", "strat")
    wrong_drift = sde.SDE(lambda t, y, a: y[:1], lambda t, y, a: y)
    with pytest.raises(ValueError, match=r"drift must return the shape of y0 \(2,\), got \(1,\)"):
        sde.solve(wrong_drift, sde.EulerMaruyama(), jnp.ones(2), 0.0, 1.0, dt=0.1, key=jax.random.key(0))
    wrong_diffusion = sde.SDE(lambda t, y, a: y, lambda t, y, a: y[:1])
    with pytest.raises(ValueError, match=r"diffusion must return shape \(2,\) for noise='diagonal'"):
        sde.solve(wrong_diffusion, sde.EulerMaruyama(), jnp.ones(2), 0.0, 1.0, dt=0.1, key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"rtol must lie in \[0, inf\)"):
        sde.PIController(rtol=-1.0)


def test_general_noise_matrix_diffusion(x64):
    # Two components driven by three Brownian motions: g is (2, 3); E|Y_1|^2 = |y0|^2 + trace(g g^T).
    g = jnp.asarray([[0.3, 0.0, 0.4], [0.1, 0.2, 0.0]])
    eq = sde.SDE(lambda t, y, a: jnp.zeros_like(y), lambda t, y, a: g, "general")
    keys = jax.random.split(jax.random.key(4), 4000)
    y1 = jax.vmap(lambda k: sde.solve(eq, sde.EulerMaruyama(), jnp.zeros(2), 0.0, 1.0, dt=0.25,
                                       key=k, check=False).y1)(keys)
    cov = np.cov(np.asarray(y1).T)
    np.testing.assert_allclose(cov, np.asarray(g @ g.T), atol=5 * 0.25 * np.sqrt(2 / 4000))


def test_state_rule_controller_takes_the_steps_the_rule_asks_for(x64):
    # h = clip(0.1 * |y|, 2^-10, 0.05): every step accepted, each as long as the rule says.
    rule = sde.StateRuleController(lambda t, y: 0.1 * jnp.abs(y), dt_min=2.0**-10, dt_max=0.05)
    sol = sde.solve(gbm("ito"), sde.EulerMaruyama(), jnp.full((), 0.2), 0.0, 1.0, dt=0.1,
                    key=jax.random.key(5), controller=rule, max_steps=5000)
    n = int(sol.n_steps)
    ts, ys = np.asarray(sol.ts[: n + 1]), np.asarray(sol.ys[: n + 1])
    expected = np.clip(0.1 * np.abs(ys[:-1]), 2.0**-10, 0.05)
    np.testing.assert_allclose(np.diff(ts)[:-1], expected[:-1], rtol=1e-9)  # the last step ends at t1
    assert int(sol.stats["rejected"]) == 0 and ts[-1] == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"rule must be a function"):
        sde.StateRuleController(0.1)


def test_a_tree_coarser_than_the_steps_is_refused():
    tree = BrownianTree(0.0, 1.0, 0.1, (), jax.random.key(0))
    with pytest.raises(ValueError, match=r"brownian.tol must be <= dt = 0.01"):
        sde.solve(gbm("ito"), sde.EulerMaruyama(), jnp.ones(()), 0.0, 1.0, dt=0.01, brownian=tree)
    with pytest.raises(ValueError, match=r"brownian.tol must be <= controller.dt_min = 1e-06"):
        sde.solve(gbm("stratonovich"), sde.Heun(), jnp.ones(()), 0.0, 1.0, dt=0.01, brownian=tree,
                  controller=sde.PIController())


def test_weak_order_of_euler_maruyama_is_one(x64):
    # E[Y_1] = exp(mu) for Ito GBM; Euler-Maruyama's bias is exp(mu) - (1 + mu h)^(1/h) = O(h).
    conv = sde.weak_convergence(gbm("ito"), sde.EulerMaruyama(), jnp.ones(()), 0.0, 1.0,
                                [0.5, 0.25, 0.125, 0.0625], jax.random.key(6), 20000,
                                phi=lambda y: y, expected=float(np.exp(MU)))
    lo, hi = conv.ci
    assert lo - 0.15 < 1.0 < hi + 0.15, str(conv)
    # Common random numbers: each error is the bias (1 + mu h)^n - e^mu plus the same sampling noise.
    bias = np.array([(1 + MU * h) ** round(1 / h) for h in conv.dts]) - np.exp(MU)
    noise = conv.path_errors.mean(axis=0) - bias
    assert np.ptp(noise) < 5 * conv.path_errors.std() / np.sqrt(20000)
