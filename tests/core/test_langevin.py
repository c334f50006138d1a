"""Langevin samplers: exact invariance (MALA), known biases (ULA, BAOAB, OBABO), strong orders on one
Brownian tree, exact gradient counts, R-hat on a funnel, and errors that name what is wrong.

Statistical checks start many independent chains from a known law, so the samples at a fixed step
are i.i.d. and the tolerance follows from the sample size (5 standard errors; fixed keys).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from solverlab import SolverError, langevin, sde
from solverlab.brownian import BrownianTree
from solverlab.langevin.kinetic import _kinetic

Z = 5.0
SIGMA = np.array([[1.0, 0.8], [0.8, 1.0]])  # eigenvalues 1.8 and 0.2
PREC = np.linalg.inv(SIGMA)
EIG, Q = np.linalg.eigh(SIGMA)


def gauss(x):
    return -0.5 * x @ jnp.asarray(PREC, x.dtype) @ x


def exact_draws(key, n, cov):
    return jax.random.normal(key, (n, 2)) @ jnp.asarray(np.linalg.cholesky(cov).T)


def assert_gaussian_moments(x, cov, name):
    """Sample mean and covariance of i.i.d. N(0, cov) draws, within Z standard errors per entry."""
    x = np.asarray(x, np.float64)
    n = x.shape[0]
    se_mean = np.sqrt(np.diag(cov) / n)
    assert np.all(np.abs(x.mean(0)) < Z * se_mean), f"{name}: mean {x.mean(0)}, allowed +- {Z * se_mean}"
    emp = np.cov(x.T)
    se_cov = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / n)
    assert np.all(np.abs(emp - cov) < Z * se_cov), f"{name}: covariance\n{emp}\nexpected\n{cov}"


# ------------------------------------------------------------------------ overdamped


def test_mala_leaves_a_correlated_gaussian_exactly_invariant():
    n, steps = 4000, 20
    x0 = exact_draws(jax.random.key(1), n, SIGMA)
    out = langevin.mala(jax.random.key(2), gauss, x0, step=0.5, n_steps=steps, thin=5)
    assert out.positions.shape == (n, 4, 2)
    for j in range(4):  # the law stays exactly N(0, SIGMA) at every step, however large the step
        assert_gaussian_moments(out.positions[:, j], SIGMA, f"MALA after {5 * (j + 1)} steps")
    rate = float(out.acceptance_rate.mean())
    assert 0.25 < rate < 0.6, rate  # a step where ULA is unstable still moves
    assert np.all(np.asarray(out.grad_evals) == 1 + steps)


def test_ula_has_its_known_gaussian_bias():
    h = 0.1
    biased = SIGMA @ np.linalg.inv(np.eye(2) - 0.5 * h * PREC)  # ULA's exact invariant law
    x0 = exact_draws(jax.random.key(3), 4000, biased)
    out = langevin.ula(jax.random.key(4), gauss, x0, step=h, n_steps=10, warmup=5)
    assert_gaussian_moments(out.x, biased, "ULA")
    # ... and the bias is visible: the stiff direction's variance is 33% too large.
    var_stiff = np.var(np.asarray(out.x) @ Q[:, 0])
    assert var_stiff > EIG[0] * 1.2, var_stiff
    assert np.all(np.asarray(out.grad_evals) == 15)


# ------------------------------------------------------------------------ kinetic: invariant laws


def _obabo_position_cov(h):
    return Q @ np.diag(EIG / (1.0 - h**2 / (4.0 * EIG))) @ Q.T


@pytest.mark.parametrize("solver", ["baoab", "obabo"])
def test_splitting_invariant_law_on_a_gaussian_has_its_known_bias(solver):
    # Leimkuhler & Matthews (2013): BAOAB's position marginal is exact on a harmonic potential at any
    # stable step; OBABO's velocities are exact and its positions have variance
    # sigma^2 / (1 - h^2 / (4 sigma^2)) per eigen-direction. h = 0.3 makes the bias 13% there.
    h = 0.3
    x0 = exact_draws(jax.random.key(5), 4000, SIGMA)
    out = langevin.kinetic_langevin(jax.random.key(6), gauss, x0, solver=solver, step=h, friction=1.0,
                                    n_steps=10, warmup=100, thin=10)
    expected = SIGMA if solver == "baoab" else _obabo_position_cov(h)
    assert_gaussian_moments(out.x, expected, f"{solver} positions")
    if solver == "obabo":
        assert_gaussian_moments(out.v, np.eye(2), "obabo velocities")
        var_stiff = np.var(np.asarray(out.x) @ Q[:, 0])
        assert var_stiff > EIG[0] * 1.06, var_stiff
    assert out.positions.shape == (4000, 1, 2)
    assert np.all(np.asarray(out.grad_evals) == 1 + 110)


def test_step_and_friction_are_traced_no_recompile():
    x0 = jnp.zeros((3, 2))
    langevin.kinetic_langevin(jax.random.key(0), gauss, x0, step=0.1, friction=1.0, n_steps=4)
    size = _kinetic._cache_size()
    out = langevin.kinetic_langevin(jax.random.key(0), gauss, x0, step=0.2, friction=2.5, n_steps=4)
    assert _kinetic._cache_size() == size
    assert out.positions.shape == (3, 4, 2) and out.v.shape == (3, 2)


# ------------------------------------------------------------------------ kinetic: strong orders

T, REF = 1.0, 2.0**-9
ORDER_DTS = {
    "euler": [2.0**-k for k in range(4, 8)],
    "baoab": [2.0**-k for k in range(2, 6)],
    "obabo": [2.0**-k for k in range(2, 6)],
    "align": [2.0**-k for k in range(2, 6)],
    "should": [2.0**-k for k in range(1, 5)],
}
X0, V0 = np.array([1.0, -0.5]), np.array([0.3, 0.2])


@pytest.fixture(scope="module")
def strong_errors():
    """Errors at T of every solver and step against ShOULD at 2**-9, all on one tree per path.

    One compiled program: per path one tree, and each solver ``vmap``-ed over its step sizes
    (``save_path=False`` keeps the step traced). ShOULD's reference rides in its own sweep.
    """
    with jax.enable_x64(True):
        x0, v0 = jnp.asarray(X0), jnp.asarray(V0)

        def one(key):
            tree = BrownianTree(0.0, T, REF / 2, (2,), key, levy_area="space-time-time")
            sweeps = {}
            for name, dts in ORDER_DTS.items():
                steps = jnp.asarray(dts + [REF] if name == "should" else dts)
                p = jax.vmap(lambda h: langevin.kinetic_solve(
                    gauss, x0, v0, 0.0, T, solver=name, step=h, friction=1.0, brownian=tree,
                    save_path=False, check=False))(steps)
                sweeps[name] = jnp.concatenate([p.x1, p.v1], axis=-1)
            ref = sweeps["should"][-1]
            return {k: jnp.linalg.norm(s[: len(ORDER_DTS[k])] - ref, axis=-1) for k, s in sweeps.items()}

        errs = jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(7), 64))
        return {k: np.asarray(e) for k, e in errs.items()}


@pytest.mark.parametrize("name", list(ORDER_DTS))
def test_strong_order_on_a_gaussian_target_against_a_fine_reference_on_one_tree(name, strong_errors):
    e = strong_errors[name]
    assert np.all(np.isfinite(e))
    order, (lo, hi) = sde.fit_order(ORDER_DTS[name], e)
    theory = langevin.SOLVERS[name].strong_order
    assert lo - 0.15 < theory < hi + 0.15, f"{name}: order {order:.2f} (CI {lo:.2f} to {hi:.2f}), theory {theory}"
    assert np.all(np.diff(e.mean(0)) < 0)


@pytest.mark.slow  # two more tree compiles (about 10 s on 2 busy cores)
def test_constant_and_adaptive_solves_on_one_tree(x64):
    tree = BrownianTree(0.0, T, 2.0**-14, (2,), jax.random.key(8), levy_area="space-time-time")
    x0, v0 = jnp.asarray(X0), jnp.asarray(V0)
    ref = langevin.kinetic_solve(gauss, x0, v0, 0.0, T, solver="should", step=2.0**-8, brownian=tree)
    assert ref.xs.shape == (257, 2) and int(ref.grad_evals) == 1 + 2 * 256
    ctrl = sde.PIController(rtol=1e-3, atol=1e-3, dt_min=2.0**-12)
    ad = langevin.kinetic_solve(gauss, x0, v0, 0.0, T, solver="align", step=0.1, brownian=tree,
                                controller=ctrl)
    n, rej = int(ad.n_steps), int(ad.rejected)
    assert 4 < n < 200
    assert int(ad.grad_evals) == 1 + n + rej  # rejected steps cost a gradient too
    np.testing.assert_allclose(ad.ts[n], T)
    err = float(jnp.linalg.norm(jnp.concatenate([ad.x1 - ref.x1, ad.v1 - ref.v1])))
    assert err < 2e-2, err


# ------------------------------------------------------------------------ counts, funnel, R-hat


@pytest.mark.parametrize("method", ["ula", "mala", "euler", "baoab", "obabo", "align", "should"])
def test_gradient_evaluations_are_counted_exactly(method):
    calls = []

    def counted(x):
        jax.debug.callback(lambda: calls.append(1))
        return gauss(x)

    kw = dict(n_steps=6, warmup=3, thin=2)
    if method == "ula":
        out = langevin.ula(jax.random.key(0), counted, jnp.ones(2), step=0.1, **kw)
    elif method == "mala":
        out = langevin.mala(jax.random.key(0), counted, jnp.ones(2), step=0.1, **kw)
    else:
        out = langevin.kinetic_langevin(jax.random.key(0), counted, jnp.ones(2), solver=method,
                                        step=0.1, **kw)
    jax.block_until_ready(out)
    jax.effects_barrier()
    assert int(out.grad_evals) == len(calls) > 0
    assert out.positions.shape == (3, 2)


def funnel(z):
    """Neal's funnel with a milder neck: v ~ N(0, 1.5^2), x | v ~ N(0, e^v)."""
    v, x = z[0], z[1]
    return -0.5 * (v / 1.5) ** 2 - 0.5 * x**2 * jnp.exp(-v) - 0.5 * v


@pytest.mark.parametrize("method", ["baoab", "mala"])
def test_chains_started_apart_agree_on_the_funnel(method):
    x0 = jnp.stack([jnp.linspace(-3.0, 3.0, 8), jnp.linspace(2.0, -2.0, 8)], axis=1)
    kw = dict(n_steps=8000, warmup=1000, thin=4)
    if method == "mala":
        out = langevin.mala(jax.random.key(9), funnel, x0, step=0.1, **kw)
    else:
        out = langevin.kinetic_langevin(jax.random.key(9), funnel, x0, solver="baoab", step=0.1,
                                        friction=1.0, **kw)
    r = langevin.rhat(out.positions)
    assert np.all(r < 1.05), r
    v = np.asarray(out.positions[..., 0]).ravel()
    assert abs(v.mean()) < 0.3 and 1.2 < v.std() < 1.8, (v.mean(), v.std())  # loose: correlated draws


def test_rhat_flags_chains_that_disagree():
    rng = np.random.default_rng(0)
    iid = rng.normal(size=(4, 1000))
    assert abs(langevin.rhat(iid) - 1) < 0.01
    shifted = iid + np.arange(4)[:, None]
    assert langevin.rhat(shifted) > 1.5
    with pytest.raises(ValueError, match="samples"):
        langevin.rhat(np.zeros(10))


# ------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(step=0.0), r"step must lie in \(0, inf\), got 0"),
        (dict(step=-0.1), "step must lie in"),
        (dict(step=float("nan")), "step must be finite"),
        (dict(friction=0.0), r"friction must lie in \(0, inf\)"),
        (dict(n_steps=0), "n_steps must be an int >= 1"),
        (dict(thin=3), "thin must divide n_steps = 4"),
        (dict(warmup=-1), "warmup must be an int >= 0"),
        (dict(solver="rk4"), "solver must be one of"),
        (dict(v0=jnp.zeros(3)), "v0 must have the shape of x0"),
    ],
)
def test_kinetic_bad_arguments_name_what_is_wrong(kwargs, match):
    base = dict(step=0.1, friction=1.0, n_steps=4)
    base.update(kwargs)
    with pytest.raises(ValueError, match=match):
        langevin.kinetic_langevin(jax.random.key(0), gauss, jnp.zeros(2), **base)


@pytest.mark.parametrize("sampler", [langevin.ula, langevin.mala])
def test_overdamped_bad_arguments(sampler):
    with pytest.raises(ValueError, match=r"step must lie in \(0, inf\)"):
        sampler(jax.random.key(0), gauss, jnp.zeros(2), step=-1.0, n_steps=3)
    with pytest.raises(ValueError, match="must return a scalar .* got shape \\(2,\\)"):
        sampler(jax.random.key(0), lambda x: -0.5 * x**2, jnp.zeros(2), step=0.1, n_steps=3)
    with pytest.raises(ValueError, match="log_density failed on one chain's position of shape \\(2,\\)"):
        sampler(jax.random.key(0), lambda x: x @ jnp.ones(3), jnp.zeros(2), step=0.1, n_steps=3)
    with pytest.raises(ValueError, match="x0 must have shape"):
        sampler(jax.random.key(0), gauss, jnp.zeros((2, 2, 2)), step=0.1, n_steps=3)
    with pytest.raises(ValueError, match="key must be"):
        sampler(None, gauss, jnp.zeros(2), step=0.1, n_steps=3)


def nan_beyond(x):
    """A log density (and gradient) that turns NaN once |x_0| > 3: a broken model, not a support edge."""
    return gauss(x) + jnp.sqrt(9.0 - x[0] ** 2)


@pytest.mark.parametrize("method", ["ula", "mala", "baoab"])
def test_nan_log_density_raises_solver_error_naming_chain_and_step(method):
    x0 = jnp.array([[0.0, 0.0], [5.0, 0.0]])  # chain 1 starts where the log density is NaN
    kw = dict(step=0.1, n_steps=4)
    run = {"ula": langevin.ula, "mala": langevin.mala}.get(method)
    call = (lambda **k: run(jax.random.key(0), nan_beyond, x0, **k)) if run else (
        lambda **k: langevin.kinetic_langevin(jax.random.key(0), nan_beyond, x0, solver=method, **k))
    with pytest.raises(SolverError, match="chain 1 .* at the starting point.*NaN"):
        call(**kw)
    out = call(check=False, **kw)
    assert int(out.bad_step[0]) == -1 and int(out.bad_step[1]) == 0


def test_kinetic_solve_bad_trees_and_controllers(x64):
    x0, v0 = jnp.zeros(2), jnp.zeros(2)
    coarse = BrownianTree(0.0, 1.0, 0.1, (2,), jax.random.key(0), levy_area="space-time-time")
    with pytest.raises(ValueError, match="brownian.tol must be <= the shortest sub-step 0.005"):
        langevin.kinetic_solve(gauss, x0, v0, 0.0, 1.0, solver="obabo", step=0.01, brownian=coarse)
    plain = BrownianTree(0.0, 1.0, 1e-3, (2,), jax.random.key(0))
    with pytest.raises(ValueError, match="should needs a tree with levy_area='space-time-time'"):
        langevin.kinetic_solve(gauss, x0, v0, 0.0, 1.0, solver="should", step=0.01, brownian=plain)
    with pytest.raises(ValueError, match="baoab has no embedded error estimate"):
        langevin.kinetic_solve(gauss, x0, v0, 0.0, 1.0, solver="baoab", step=0.01, key=jax.random.key(0),
                               controller=sde.PIController())
    with pytest.raises(ValueError, match="rtol must lie in"):
        sde.PIController(rtol=-1e-3)
    with pytest.raises(ValueError, match="rtol and atol must not both be 0"):
        sde.PIController(rtol=0.0, atol=0.0)
    with pytest.raises(ValueError, match="friction must lie in"):
        langevin.kinetic_solve(gauss, x0, v0, 0.0, 1.0, step=0.01, friction=-1.0, key=jax.random.key(0))
    with pytest.raises(ValueError, match="x0 and v0 must both have shape"):
        langevin.kinetic_solve(gauss, jnp.zeros((2, 2)), jnp.zeros((2, 2)), 0.0, 1.0, step=0.01,
                               key=jax.random.key(0))
