"""DPM-Solver-v3 (solverlab.diffusion.v3): empirical model statistics and the multistep solver.

Checks: the update reduces to DPM-Solver / DPM-Solver++ for the paper's degenerate statistics; the
fitted statistics of a single Gaussian are its closed form, and v3 is then nearly exact; the order
of convergence on the ring against the adaptive reference; v3 against DPM-Solver++(2M) at NFE 5
and 10 on held-out noise; a traced NFE; argument checks.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from solverlab.diffusion import gmm, metrics, reference, samplers, schedules, v3

SCHEDULE = schedules.VPLinear()


def _fit(model, mixture, label=None, n=256, n_grid=200, key=0):
    data = mixture.sample(jax.random.key(key), n, label=label)
    return v3.fit_v3_statistics(model, SCHEDULE, data, jax.random.key(key + 1), n_grid=n_grid)


@pytest.fixture(scope="module")
def ring_fit():
    """The ring's model and statistics (float64), fitted once for the module."""
    with jax.enable_x64(True):
        ring = gmm.ring()
        model = gmm.model_fn(ring, SCHEDULE)
        yield ring, model, _fit(model, ring)


def _noise(key, n, d):
    return jax.random.normal(jax.random.key(key), (n, d), jnp.float64) * SCHEDULE.sigma(SCHEDULE.t_max)


def _error(model, x_T, ref, method, nfe, fitted=None):
    """Terminal error with a traced nfe: one compiled sampler serves every NFE of a test."""
    out = samplers.sample(model, x_T, SCHEDULE, method, jnp.asarray(nfe), fitted=fitted)
    return float(metrics.terminal_error(out, ref))


def _degenerate(l_value, s_value, d=2, n_grid=100, **options):
    shape = (n_grid + 1, d)
    return v3.from_arrays(SCHEDULE, jnp.full(shape, l_value), jnp.full(shape, s_value), jnp.zeros(shape), **options)


def test_degenerate_statistics_give_dpm_solver_and_dpm_solver_pp(x64):
    """Zheng et al. 2023, sec. 3.1: l = 1, s = b = 0 is DPM-Solver++, l = 0, s = -1, b = 0 is
    DPM-Solver; at first order both are DDIM."""
    ring = gmm.ring()
    model = gmm.model_fn(ring, SCHEDULE)
    x_T = _noise(3, 64, 2)
    for nfe in (2, 4, 7):
        nfe = jnp.asarray(nfe)
        ddim = samplers.sample(model, x_T, SCHEDULE, "ddim", nfe)
        for l_value, s_value in ((1.0, 0.0), (0.0, -1.0)):
            stats = _degenerate(l_value, s_value, order=1, corrector=False)
            out = samplers.sample(model, x_T, SCHEDULE, "dpm_solver_v3", nfe, fitted=stats)
            np.testing.assert_allclose(np.asarray(out), np.asarray(ddim), rtol=1e-10, atol=1e-10)


def test_degenerate_second_order_is_dpm_solver_pp_multistep(x64):
    """l = 1, s = b = 0, order 2 is DPM-Solver++'s multistep update with the exact phi_2 coefficient
    (Lu et al. 2022b, eq. of the 2M step written with phi_1 = e^{-h} - 1, phi_2 = phi_1/h + 1),
    written out here for NFE = 4 (three main steps) on a nonlinear model."""

    def model(x, t):
        return jnp.tanh(x) * (0.5 + t)

    sch = SCHEDULE
    x = jnp.asarray([[-1.3, 0.4], [0.2, 2.0], [2.1, -0.7]])
    lam = jnp.linspace(sch.lambda_(sch.t_max), sch.lambda_(sch.t_min), 4)
    ts = [sch.t_of_lambda(v) for v in lam]

    def data(x, t):
        return (x - sch.sigma(t) * model(x, t)) / sch.alpha(t)

    d_prev = None
    for i in range(3):
        h = lam[i + 1] - lam[i]
        d = data(x, ts[i])
        phi1 = jnp.expm1(-h)
        step = sch.sigma(ts[i + 1]) / sch.sigma(ts[i]) * x - sch.alpha(ts[i + 1]) * phi1 * d
        if d_prev is not None:
            slope = (d - d_prev) / (lam[i] - lam[i - 1])  # first divided difference, times h below
            step = step + sch.alpha(ts[i + 1]) * (phi1 / h + 1) * h * slope
        x, d_prev = step, d
    expected = data(x, ts[3])
    stats = _degenerate(1.0, 0.0, order=2, corrector=False, lower_order_final=False)
    out = samplers.sample(model, jnp.asarray([[-1.3, 0.4], [0.2, 2.0], [2.1, -0.7]]), sch, "dpm_solver_v3", 4,
                          fitted=stats)
    np.testing.assert_allclose(np.asarray(out), np.asarray(expected), rtol=1e-10, atol=1e-12)


def test_single_gaussian_statistics_are_the_closed_form(x64):
    r"""Data N(m, diag(v)): eps = sigma (x - alpha m)/(alpha^2 v + sigma^2), so
    l = kappa = 1/(1 + e^{2 lambda} v) exactly, f = -kappa m does not vary (s = 0) and
    b = df/dlambda = -kappa' m; then g is constant and the first-order v3 step is exact."""
    m, var = jnp.array([1.5, -0.7]), jnp.array([0.25, 2.0])
    gauss = gmm.GaussianMixture(jnp.ones(1), m[None], jnp.diag(var)[None])
    model = gmm.model_fn(gauss, SCHEDULE)
    stats = _fit(model, gauss, n=64)
    e2l = jnp.exp(2 * stats.lams)[:, None]
    kappa = 1 / (1 + e2l * var)
    dkappa = -2 * var * e2l / (1 + e2l * var) ** 2
    np.testing.assert_allclose(np.asarray(stats.l), np.asarray(kappa), rtol=1e-12, atol=1e-12)
    assert float(jnp.max(jnp.abs(stats.s))) < 1e-6
    np.testing.assert_allclose(np.asarray(stats.b), np.asarray(-dkappa * m), rtol=1e-9, atol=1e-12)

    x_T = _noise(5, 300, 2)
    a, s = SCHEDULE.alpha(SCHEDULE.t_max), SCHEDULE.sigma(SCHEDULE.t_max)
    exact = m + jnp.sqrt(var) * (x_T - a * m) / jnp.sqrt(a**2 * var + s**2)
    e_v3 = _error(model, x_T, exact, "dpm_solver_v3", 5, stats)
    e_2m = _error(model, x_T, exact, "dpm_solver++_2m", 5)
    # measured: v3 1.2e-4 (every method's floor here: the last step is the data prediction at t_min,
    # not the ODE down to t = 0), DPM-Solver++(2M) 0.14
    assert e_v3 < 1e-3 and e_v3 < 0.01 * e_2m, (e_v3, e_2m)


def test_convergence_order_on_the_ring(ring_fit, x64):
    """Predictor of order 3 with the order-3 corrector: global order 3 (log-log slope in [2.5, 4.5])."""
    _, model, stats = ring_fit
    x_T = _noise(7, 128, 2)
    ref = reference.reference(model, x_T, SCHEDULE, rtol=1e-11, atol=1e-11).x0
    nfes = np.array([21, 41, 81])  # measured errors 1.2e-2, 8.2e-4, 5.3e-5 (slope 3.9)
    errs = np.array([_error(model, x_T, ref, "dpm_solver_v3", int(n), stats) for n in nfes])
    slope = -np.polyfit(np.log(nfes - 1), np.log(errs), 1)[0]
    assert 2.5 < slope < 4.5, (slope, errs)
    assert np.all(np.diff(errs) < 0), errs


def _v3_against_2m(model, stats, d, n=128):
    """Errors of v3 and DPM-Solver++(2M) at NFE 5 and 10 from held-out noise (not the statistics')."""
    x_T = _noise(11, n, d)
    ref = reference.reference(model, x_T, SCHEDULE, rtol=1e-9, atol=1e-9).x0
    return {nfe: (_error(model, x_T, ref, "dpm_solver_v3", nfe, stats), _error(model, x_T, ref, "dpm_solver++_2m", nfe))
            for nfe in (5, 10)}


def test_v3_beats_dpm_solver_pp_2m_on_the_ring(ring_fit, x64):
    """Unconditional ring. Measured (128 samples): v3 0.49 / 0.13 vs 2M 1.09 / 0.19 at NFE 5 / 10."""
    _, model, stats = ring_fit
    for nfe, (e_v3, e_2m) in _v3_against_2m(model, stats, 2).items():
        assert e_v3 < 0.8 * e_2m, (nfe, e_v3, e_2m)


@pytest.mark.slow
def test_v3_beats_dpm_solver_pp_2m_under_strong_guidance(x64):
    """Classifier-free guidance 7.5 towards class 2 of the ring. Measured: v3 0.57 / 0.20 vs
    2M 19.6 / 4.3 at NFE 5 / 10 (without ``corrector_guard`` the corrector blows up: 3.7e7 / 7.1e5)."""
    ring = gmm.ring()
    model = gmm.model_fn(ring, SCHEDULE, label=2, guidance=7.5)
    stats = _fit(model, ring, label=2)
    for nfe, (e_v3, e_2m) in _v3_against_2m(model, stats, 2).items():
        assert e_v3 < 0.2 * e_2m, (nfe, e_v3, e_2m)
    unguarded = _v3_against_2m(model, stats.with_options(corrector_guard=None), 2)
    assert unguarded[5][0] > 100 * unguarded[5][1]  # the failure the guard prevents


@pytest.mark.slow
def test_v3_beats_dpm_solver_pp_2m_in_64_dimensions(x64):
    """A 64-D random mixture (8 components), Hutchinson estimate of l. Measured (128 statistics
    samples, 64 cells; 64 held-out samples): v3 5.7 / 3.3 vs 2M 11.8 / 5.3 at NFE 5 / 10."""
    mixture = gmm.random_mixture(jax.random.key(7), d=64, K=8)
    model = gmm.model_fn(mixture, SCHEDULE)
    stats = _fit(model, mixture, n=128, n_grid=64)
    for nfe, (e_v3, e_2m) in _v3_against_2m(model, stats, 64, n=64).items():
        assert e_v3 < 0.8 * e_2m, (nfe, e_v3, e_2m)


def test_traced_nfe_matches_static_nfe(ring_fit, x64):
    _, model, stats = ring_fit
    x_T = _noise(2, 128, 2)  # the shape of the other ring tests: the traced sampler is compiled already
    for nfe in (6,):
        static = samplers.sample(model, x_T, SCHEDULE, "dpm_solver_v3", nfe, fitted=stats)
        traced = samplers.sample(model, x_T, SCHEDULE, "dpm_solver_v3", jnp.asarray(nfe), fitted=stats)
        np.testing.assert_allclose(np.asarray(traced), np.asarray(static), rtol=1e-12, atol=1e-12)


@pytest.mark.slow
def test_gradient_flows_into_the_statistics(ring_fit, x64):
    """With a static nfe the sampler is differentiable in the fitted arrays (e.g. to tune them)."""
    _, model, stats = ring_fit
    x_T = _noise(2, 8, 2)

    def loss(b):
        fitted = v3.from_arrays(SCHEDULE, stats.l, stats.s, b)
        return jnp.sum(samplers.sample(model, x_T, SCHEDULE, "dpm_solver_v3", 4, fitted=fitted, check=False) ** 2)

    grad = jax.grad(loss)(stats.b)
    assert bool(jnp.all(jnp.isfinite(grad))) and float(jnp.max(jnp.abs(grad))) > 0


def test_bad_input_is_refused(ring_fit, x64):
    ring, model, stats = ring_fit
    data = ring.sample(jax.random.key(0), 8)
    key = jax.random.key(1)
    with pytest.raises(ValueError, match="x_data must be a"):
        v3.fit_v3_statistics(model, SCHEDULE, data[0], key)
    with pytest.raises(ValueError, match=r"n_grid must be an int in \[8, inf\), got 4"):
        v3.fit_v3_statistics(model, SCHEDULE, data, key, n_grid=4)
    with pytest.raises(ValueError, match="jacobian must be one of"):
        v3.fit_v3_statistics(model, SCHEDULE, data, key, jacobian="full")
    with pytest.raises(ValueError, match="order must be one of 1, 2, 3, got 4"):
        v3.fit_v3_statistics(model, SCHEDULE, data, key, order=4)
    with pytest.raises(ValueError, match="corrector_guard must lie in"):
        stats.with_options(corrector_guard=-1.0)
    with pytest.raises(ValueError, match="needs fitted = a V3Statistics"):
        samplers.sample(model, _noise(0, 4, 2), SCHEDULE, "dpm_solver_v3", 5)
    with pytest.raises(ValueError, match="fitted statistics were computed for schedule"):
        samplers.sample(model, _noise(0, 4, 2), schedules.VPCosine(), "dpm_solver_v3", 5, fitted=stats)
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 2\)"):
        samplers.sample(lambda x, t: x, _noise(0, 4, 3), SCHEDULE, "dpm_solver_v3", 5, fitted=stats)
