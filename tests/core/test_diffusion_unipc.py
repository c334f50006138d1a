"""UniPC (solverlab.diffusion.unipc): orders on an exact Gaussian mixture against the reference solve,
the corrector's extra order, and the steps written out from the paper (Zhao et al., NeurIPS 2023).

A one-off cross-check against diffusers.UniPCMultistepScheduler 0.42.1 fed the same exact noise
prediction (ring mixture, DDPMLinear, guidance 1 and 7.5, NFE 5/10/20, the same step times) agreed to
a relative 1e-7..1e-5 (float32 coefficients in diffusers) for bh1, bh2 and order 3; it is not a test
here because diffusers is not a test dependency.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from solverlab.diffusion import gmm, metrics, reference, schedules, unipc
from solverlab.diffusion.samplers import METHODS, sample

SCHEDULE = schedules.VPLinear()
NFES = (17, 33, 65)  # the asymptotic regime on this mixture (errors 1e-2 .. 1e-5)


def smooth_mixture():
    """Four broad components: the exponential integrators reach their asymptotic order by NFE ~ 17."""
    return gmm.ring(K=4, radius=2.0, radial_std=0.5, tangential_std=0.8)


@functools.cache
def problem():
    with jax.enable_x64(True):
        model = gmm.model_fn(smooth_mixture(), SCHEDULE)
        x_T = jax.random.normal(jax.random.key(0), (32, 2), jnp.float64)
        ref = reference.reference(model, x_T, SCHEDULE, rtol=1e-12, atol=1e-12).x0
    return model, x_T, ref


@functools.cache
def slope_and_errors(method):
    """Least-squares slope of log error against log(main-loop steps); one compile (traced nfe)."""
    model, x_T, ref = problem()
    with jax.enable_x64(True):
        errors = np.array([float(metrics.terminal_error(sample(model, x_T, SCHEDULE, method, jnp.asarray(n)), ref))
                           for n in NFES])
    steps = np.array(NFES) - 1
    return -np.polyfit(np.log(steps), np.log(errors), 1)[0], errors


# Order p + 1 for UniPC-p (the corrector adds one), p for UniP-p alone.
@pytest.mark.parametrize("method, low, high", [
    ("unip_bh2", 1.7, 2.4),
    ("unipc_bh2", 2.7, 3.4),
    ("unipc_bh1", 2.7, 3.8),
    ("unipc_bh2_3", 3.4, 4.6),
])
def test_empirical_order_against_the_reference(method, low, high):
    slope, errors = slope_and_errors(method)
    assert low < slope < high, (method, slope, errors)
    assert np.all(np.diff(errors) < 0), errors


def test_the_corrector_raises_the_order():
    with_c, e_c = slope_and_errors("unipc_bh2")
    without, e_p = slope_and_errors("unip_bh2")
    assert with_c - without > 0.7, (with_c, without)
    assert e_c[-1] < 0.2 * e_p[-1], (e_c, e_p)


def test_unip_bh2_is_dpm_solver_pp_2m(x64):
    """With B(h) = e^{-h} - 1 and a_1 = 1/2, UniP-2 is DPM-Solver++(2M) (Lu et al. 2022b)."""
    model, x_T, _ = problem()
    for nfe in (6,):
        np.testing.assert_allclose(np.asarray(sample(model, x_T, SCHEDULE, "unip_bh2", nfe)),
                                   np.asarray(sample(model, x_T, SCHEDULE, "dpm_solver++_2m", nfe)),
                                   rtol=1e-12, atol=1e-12)


def phi2(z):
    return (np.exp(z) - 1 - z) / z**2


def phi3(z):
    return (np.exp(z) - 1 - z - z**2 / 2) / z**3


@pytest.mark.parametrize("variant", ["bh1", "bh2"])
def test_steps_are_the_papers_formulas(variant, x64):
    """NFE = 4 written out: UniP-1 + UniC-1, UniP-2 + UniC-2 (coefficients from the 2x2 system of the
    paper, with phi_k in closed form), UniP-2 without corrector, then the data prediction."""

    def model(x, t):
        return jnp.tanh(x) * (0.5 + t) + 0.1 * x

    sch = SCHEDULE
    x = jnp.asarray([[-1.3, 0.4], [0.2, -0.7], [2.1, 1.0]])
    lam = np.linspace(float(sch.lambda_(sch.t_max)), float(sch.lambda_(sch.t_min)), 4)
    t = [sch.t_of_lambda(jnp.asarray(v)) for v in lam]
    a = [float(sch.alpha(v)) for v in t]
    s = [float(sch.sigma(v)) for v in t]
    h = np.diff(lam)

    def B(h):
        return -h if variant == "bh1" else np.expm1(-h)

    def data(x, i):
        return (x - s[i] * model(x, t[i])) / a[i]

    def base(x, i, m):  # first-order part of the step t_i -> t_{i+1}
        return s[i + 1] / s[i] * x - a[i + 1] * np.expm1(-h[i]) * m

    m0 = data(x, 0)
    x1_pred = base(x, 0, m0)
    m1 = data(x1_pred, 1)
    x1 = base(x, 0, m0) - a[1] * B(h[0]) * 0.5 * (m1 - m0)  # UniC-1
    r = (lam[0] - lam[1]) / h[1]
    D1 = (m0 - m1) / r
    x2_pred = base(x1, 1, m1) - a[2] * B(h[1]) * 0.5 * D1  # UniP-2
    m2 = data(x2_pred, 2)
    z = -h[1]
    g = np.array([z * phi2(z), 2 * z * phi3(z)]) / B(h[1])
    c = np.linalg.solve(np.array([[1.0, 1.0], [r, 1.0]]), g)  # UniC-2: R_2 c = g
    x2 = base(x1, 1, m1) - a[2] * B(h[1]) * (c[0] * D1 + c[1] * (m2 - m1))
    r = (lam[1] - lam[2]) / h[2]
    x3_pred = base(x2, 2, m2) - a[3] * B(h[2]) * 0.5 * (m1 - m2) / r  # last step: UniP-2 only
    expected = data(x3_pred, 3)
    got = sample(model, x, sch, f"unipc_{variant}", 4)
    np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-10, atol=1e-12)


def test_order_three_coefficients_satisfy_the_order_conditions(x64):
    """UniC-3's weights solve sum_k c_k r_k^(j-1) = g_j: with r = (r_1, r_2, 1) the system is a
    Vandermonde one; check it against numpy's solver and the closed-form phi_k."""
    z, r1, r2 = -0.8, -1.0, -2.1
    c = np.asarray(unipc.corrector_coefficients(jnp.asarray(z), jnp.asarray([r1, r2]), "bh2"))
    g = np.array([z * phi2(z), 2 * z * phi3(z), 6 * z * (phi3(z) - 1 / 6) / z]) / np.expm1(z)
    R = np.vander([r1, r2, 1.0], 3, increasing=True).T
    np.testing.assert_allclose(c, np.linalg.solve(R, g), rtol=1e-10)
    a = np.asarray(unipc.predictor_coefficients(jnp.asarray(z), jnp.asarray([r1, r2]), "bh1"))
    np.testing.assert_allclose(a, np.linalg.solve(np.vander([r1, r2], 2, increasing=True).T, g[:2] * np.expm1(z) / z),
                               rtol=1e-10)


@pytest.mark.parametrize("method", ["unipc_bh2", "unipc_bh2_3"])
def test_traced_nfe_matches_static_nfe(method, x64):
    model, x_T, _ = problem()  # the traced sampler is the one the order test compiled
    for nfe in (5,):
        np.testing.assert_allclose(np.asarray(sample(model, x_T, SCHEDULE, method, jnp.asarray(nfe))),
                                   np.asarray(sample(model, x_T, SCHEDULE, method, nfe)), rtol=1e-11, atol=1e-12)


def test_nfe_counts_every_model_evaluation():
    calls = []

    def counting(x, t):
        jax.debug.callback(lambda: calls.append(1))
        return 0.3 * x

    names = [m for m in METHODS if m.startswith(("unipc_", "unip_"))]
    assert len(names) == 8, names
    for method in names:
        for nfe in (1, 2, 5):
            calls.clear()
            jax.block_until_ready(sample(counting, jnp.zeros((3, 1)), SCHEDULE, method, jnp.asarray(nfe)))
            assert len(calls) == nfe, (method, nfe, len(calls))


def test_lower_order_final_lowers_only_the_last_steps_of_short_runs(x64):
    model, x_T, _ = problem()
    for plain, lof in (("unipc_bh2", "unipc_bh2_lof"), ("unipc_bh2_3", "unipc_bh2_3_lof")):
        # From 15 main-loop steps (nfe 16) on, the variant is the plain method.
        for nfe in (16, 30):
            np.testing.assert_array_equal(np.asarray(sample(model, x_T, SCHEDULE, lof, nfe)),
                                          np.asarray(sample(model, x_T, SCHEDULE, plain, nfe)))
        # One main-loop step is first order either way; below 15 steps the last step is first order.
        np.testing.assert_array_equal(np.asarray(sample(model, x_T, SCHEDULE, lof, 2)),
                                      np.asarray(sample(model, x_T, SCHEDULE, plain, 2)))
        assert not np.allclose(np.asarray(sample(model, x_T, SCHEDULE, lof, 5)),
                               np.asarray(sample(model, x_T, SCHEDULE, plain, 5)))
    # ... and it helps there: a coarse 5-evaluation run lands nearer the reference.
    ref = problem()[2]
    for plain, lof in (("unipc_bh2", "unipc_bh2_lof"), ("unipc_bh2_3", "unipc_bh2_3_lof")):
        err = {m: float(metrics.terminal_error(sample(model, x_T, SCHEDULE, m, 5), ref)) for m in (plain, lof)}
        assert err[lof] < err[plain], err


def test_bad_input():
    with pytest.raises(ValueError, match="variant must be one of bh1, bh2, got 'bh3'"):
        unipc.unipc_stepper(2, "bh3")
    with pytest.raises(ValueError, match="order must be 1, 2 or 3, got 4"):
        unipc.unipc_stepper(4, "bh2")
    with pytest.raises(ValueError, match=r"nfe must lie in \[1, inf\), got 0"):
        sample(lambda x, t: x, jnp.zeros((2, 1)), SCHEDULE, "unipc_bh2", 0)
