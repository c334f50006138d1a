"""Markov-approximate fBM: speeds, the closed-form objective against quadrature, optimal weights
against a least-squares fit, masks, gradients, compilation and bad input (Daems et al. 2024)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate
from scipy.special import gamma as G
from solverlab.fractional.markov import (
    active_mask,
    approximation_error,
    exact_variance,
    fbm_kernel,
    ma_kernel,
    ma_variance,
    mvn_constant,
    objective_terms,
    optimal_weights,
    speeds,
)

HURSTS = [0.1, 0.3, 0.5, 0.7, 0.9]
GAMMAS = np.array([0.02, 0.7, 3.0, 45.0])  # spread, as geometric speeds are, but not geometric


def quad(f, a, b, **kw):
    return integrate.quad(f, a, b, limit=400, epsabs=0.0, epsrel=1e-12, **kw)[0]


# ------------------------------------------------------------------------------------------------
# speeds


def test_speeds_are_geometric_and_symmetric_on_a_log_scale(x64):
    g = np.asarray(speeds(5, 20.0))
    np.testing.assert_allclose(g, 20.0 ** np.array([-1.0, -0.5, 0.0, 0.5, 1.0]), rtol=1e-14)
    np.testing.assert_allclose(np.asarray(speeds(1, 7.0)), [1.0])
    g = np.asarray(speeds(6, 100.0))
    r = g[1:] / g[:-1]
    np.testing.assert_allclose(r, r[0], rtol=1e-13)
    np.testing.assert_allclose(g[0] * g[-1], 1.0, rtol=1e-13)
    # Nested grids: K = 2^j + 1 speeds contain those of K = 2^(j-1) + 1.
    np.testing.assert_allclose(np.asarray(speeds(9, 20.0))[::2], np.asarray(speeds(5, 20.0)), rtol=1e-14)


def test_speeds_with_slots_take_a_traced_K(x64):
    f = jax.jit(lambda K, gm: speeds(K, gm, slots=8))
    for K in (1, 3, 8):
        got = np.asarray(f(K, 30.0))
        np.testing.assert_allclose(got[:K], np.asarray(speeds(K, 30.0)), rtol=1e-14)
        np.testing.assert_array_equal(got[K:], 1.0)
        np.testing.assert_array_equal(np.asarray(active_mask(K, 8)), np.arange(8) < K)
    assert f._cache_size() == 1


# ------------------------------------------------------------------------------------------------
# the objective's terms against quadrature


@pytest.mark.parametrize("hurst", [0.1, 0.3, 0.7, 0.9])
def test_type_II_terms_against_quadrature(hurst, x64):
    T, a = 1.7, hurst + 0.5
    A, b, c = map(np.asarray, objective_terms(hurst, GAMMAS, T, "II"))
    k = lambda u: u ** (hurst - 0.5) / G(a)
    for i, gi in enumerate(GAMMAS):
        ref = quad(lambda u: (T - u) * k(u) * np.exp(-gi * u), 0, T)
        np.testing.assert_allclose(b[i], ref, rtol=1e-9)
        for j, gj in enumerate(GAMMAS):
            ref = quad(lambda u: (T - u) * np.exp(-(gi + gj) * u), 0, T)
            np.testing.assert_allclose(A[i, j], ref, rtol=1e-12)
    np.testing.assert_allclose(c, quad(lambda u: (T - u) * k(u) ** 2, 0, T), rtol=1e-9)


def _mvn_k(hurst):
    cH = float(mvn_constant(hurst))
    return lambda u: cH * u ** (hurst - 0.5) if u > 0 else 0.0


def test_mvn_constant_makes_type_I_the_standard_fbm(x64):
    for hurst in (0.1, 0.35, 0.8):
        k = _mvn_k(hurst)
        t = 1.3
        past = quad(lambda s: (k(t - s) - k(-s)) ** 2, -np.inf, 0.0)
        recent = quad(lambda s: k(t - s) ** 2, 0.0, t)
        np.testing.assert_allclose(past + recent, t ** (2 * hurst), rtol=1e-8)
        np.testing.assert_allclose(float(exact_variance(t, hurst, "I")), t ** (2 * hurst), rtol=1e-14)


@pytest.mark.parametrize("hurst", [0.2, 0.75])
def test_type_I_terms_against_brute_force_integration(hurst, x64):
    """A^I, b^I, c^I from the Wiener-integral definitions, integrated numerically (no closed forms)."""
    T = 1.4
    g = GAMMAS[:3]
    A, b, c = map(np.asarray, objective_terms(hurst, g, T, "I"))
    k = _mvn_k(hurst)

    def f_ou(gk, t, s):  # kernel of Y_t - Y_0 against dW_s (stationary start)
        return np.exp(-gk * (t - s)) * (s <= t) - np.exp(gk * s) * (s <= 0)

    def cov(f1, f2, t):  # E[int f1 dW int f2 dW] over (-inf, t]
        return quad(lambda s: f1(s) * f2(s), -np.inf, 0.0) + quad(lambda s: f1(s) * f2(s), 0.0, t)

    for i, gi in enumerate(g):
        fb = lambda t: cov(lambda s: k(t - s) - k(-s), lambda s: f_ou(gi, t, s), t)
        np.testing.assert_allclose(b[i], quad(fb, 0.0, T), rtol=1e-7)
        for j, gj in enumerate(g[: i + 1]):
            fa = lambda t: cov(lambda s: f_ou(gi, t, s), lambda s: f_ou(gj, t, s), t)
            np.testing.assert_allclose(A[i, j], quad(fa, 0.0, T), rtol=1e-8)
    np.testing.assert_allclose(c, T ** (2 * hurst + 1) / (2 * hurst + 1), rtol=1e-14)


@pytest.mark.parametrize("kind", ["I", "II"])
def test_terms_stay_accurate_at_extreme_speeds(kind, x64):
    """Speeds spanning 1e-6 .. 1e4 (x = gamma T from tiny to huge): finite, A positive, b smooth in gamma."""
    g = np.geomspace(1e-6, 1e4, 41)
    A, b, c = map(np.asarray, objective_terms(0.3, g, 2.0, kind))
    assert np.all(np.isfinite(A)) and np.all(np.isfinite(b)) and np.isfinite(c)
    assert np.all(np.diag(A) > 0)
    # b_k is a smooth function of log gamma: second differences small against the values.
    d2 = np.abs(np.diff(np.log(np.abs(b)), 2))
    assert d2.max() < 0.1


# ------------------------------------------------------------------------------------------------
# optimal weights


def _gauss_panels(T, n_panels=200, nodes=24, ratio=0.6):
    """Composite Gauss-Legendre nodes on geometric panels [T r^(j+1), T r^j] (resolves u^(H-1/2) at 0)."""
    x, w = np.polynomial.legendre.leggauss(nodes)
    edges = T * ratio ** np.arange(n_panels + 1)
    us, ws = [], []
    for hi, lo in zip(edges[:-1], edges[1:]):
        us.append(lo + (hi - lo) * (x + 1) / 2)
        ws.append(w * (hi - lo) / 2)
    return np.concatenate(us), np.concatenate(ws)


@pytest.mark.parametrize("hurst", HURSTS)
def test_optimal_weights_equal_a_least_squares_fit_of_the_discretised_objective(hurst, x64):
    """Type II: min over w of int_0^T (T-u) (k(u) - sum_k w_k e^{-g_k u})^2 du, by weighted lstsq (QR)."""
    T = 1.0
    g = np.asarray(speeds(4, 20.0))
    u, q = _gauss_panels(T)
    sw = np.sqrt(q * (T - u))
    k = u ** (hurst - 0.5) / G(hurst + 0.5)
    basis = np.exp(-np.outer(u, g))
    w_ls = np.linalg.lstsq(sw[:, None] * basis, sw * k, rcond=None)[0]
    w = np.asarray(optimal_weights(hurst, g, T))
    np.testing.assert_allclose(w, w_ls, rtol=1e-6, atol=1e-6 * np.abs(w_ls).max())
    # And the error is the discretised objective at the optimum.
    err_ls = np.sum(q * (T - u) * (k - basis @ w_ls) ** 2)
    np.testing.assert_allclose(float(approximation_error(hurst, g, T=T)), err_ls, rtol=1e-6, atol=1e-14)


@pytest.mark.parametrize("kind", ["I", "II"])
def test_optimal_weights_minimise_the_error(kind, x64):
    g = np.asarray(speeds(5, 50.0))
    w = np.asarray(optimal_weights(0.3, g, 2.0, kind))
    e0 = float(approximation_error(0.3, g, w, 2.0, kind))
    np.testing.assert_allclose(e0, float(approximation_error(0.3, g, None, 2.0, kind)), rtol=1e-8)
    rng = np.random.default_rng(0)
    for _ in range(5):
        dw = rng.normal(size=g.shape) * 1e-3 * np.abs(w).max()
        assert float(approximation_error(0.3, g, w + dw, 2.0, kind)) > e0


@pytest.mark.parametrize("kind", ["I", "II"])
def test_error_decreases_with_K_and_rough_noise_is_harder(kind, x64):
    Ks = [2, 3, 5, 9, 17]  # nested speed sets, so the optimum can only improve
    rel = {}
    err = jax.jit(lambda h, K: approximation_error(h, speeds(K, 20.0, slots=17), kind=kind,
                                                   active=active_mask(K, 17)))
    for hurst in [0.1, 0.3, 0.7, 0.9]:
        c = float(objective_terms(hurst, np.ones(1), 1.0, kind)[2])
        errs = np.array([float(err(hurst, K)) for K in Ks])
        assert np.all(errs >= 0.0)
        assert np.all(np.diff(errs) < 0), (hurst, errs)
        rel[hurst] = errs[-1] / c
    # Rough noise (H = 0.1) is hard: its kernel u^{-0.4} is singular at 0, and no finite sum of
    # exponentials follows it. For type II it is the hardest by far; for type I, smooth noise is
    # hard too (H = 0.9: the long memory of the stationary past needs speeds below 1/gamma_max).
    assert rel[0.1] > 0.05 and rel[0.1] > 5 * rel[0.3]
    if kind == "II":
        assert rel[0.1] > 1000 * rel[0.7] and rel[0.1] > 1000 * rel[0.9]
    else:
        assert rel[0.9] > 5 * rel[0.3]


def test_brownian_motion_is_almost_exact_for_type_II(x64):
    # H = 1/2: the kernel is constant 1, nearly an exponential with the slowest speed.
    errs = [float(approximation_error(0.5, speeds(K, 20.0))) for K in (2, 3, 5)]
    assert errs[0] < 1e-4 and errs[1] < 1e-6 and errs[2] < 1e-10


def test_type_II_kernel_and_variance_approach_the_exact_ones(x64):
    hurst, g = 0.7, speeds(9, 50.0)
    w = optimal_weights(hurst, g)
    u = np.linspace(0.05, 1.0, 20)
    np.testing.assert_allclose(np.asarray(ma_kernel(u, g, w)), np.asarray(fbm_kernel(u, hurst, "II")),
                               rtol=0.02)
    t = np.linspace(0.1, 1.0, 10)
    np.testing.assert_allclose(np.asarray(ma_variance(t, hurst, g, w)), np.asarray(exact_variance(t, hurst)),
                               rtol=0.01)


@pytest.mark.parametrize("kind", ["I", "II"])
def test_ma_variance_against_the_kernel_integral(kind, x64):
    """Var of sum_k w_k Y^k_t (type II) is int_0^t khat(u)^2 du; type I adds the stationary past."""
    g = GAMMAS
    w = np.array([0.5, -0.2, 1.0, 0.3])
    t = 0.8
    kh = lambda u: float(ma_kernel(u, g, w))
    ref = quad(lambda u: kh(u) ** 2, 0.0, t)
    if kind == "I":
        ref += quad(lambda s: (kh(t + s) - kh(s)) ** 2, 0.0, np.inf)
    np.testing.assert_allclose(float(ma_variance(t, 0.3, g, w, kind)), ref, rtol=1e-9)


# ------------------------------------------------------------------------------------------------
# masks, precision, gradients, compilation


@pytest.mark.parametrize("kind", ["II"])  # the mask acts in the solve, the same for both kinds
def test_masked_solution_equals_the_unmasked_one(kind, x64):
    slots = 12
    for K in (4, 9):
        g_slots = speeds(K, 20.0, slots=slots)
        mask = active_mask(K, slots)
        w_m = np.asarray(optimal_weights(0.3, g_slots, kind=kind, active=mask))
        g = speeds(K, 20.0)
        w = np.asarray(optimal_weights(0.3, g, kind=kind))
        assert np.all(w_m[K:] == 0.0)
        e_m = float(approximation_error(0.3, g_slots, kind=kind, active=mask))
        e = float(approximation_error(0.3, g, kind=kind))
        # Equal up to rounding in the nearly singular directions of A (about 1e-4 at K = 9).
        np.testing.assert_allclose(e_m, e, rtol=1e-3)
        if K <= 4:  # well-conditioned: the weights themselves agree
            np.testing.assert_allclose(w_m[:K], w, rtol=1e-9)
        # The kernels agree in any case (weights are ill-determined only along near-null directions).
        u = np.linspace(0.02, 1.0, 50)
        np.testing.assert_allclose(np.asarray(ma_kernel(u, g_slots, w_m)), np.asarray(ma_kernel(u, g, w)),
                                   rtol=2e-3)
    # A mask that is not a prefix: the same as leaving those speeds out.
    g = speeds(8, 20.0)
    act = np.array([True, False, True, True, False, False, False, True])
    w_m = np.asarray(optimal_weights(0.7, g, kind=kind, active=act))
    np.testing.assert_allclose(float(approximation_error(0.7, g, kind=kind, active=act)),
                               float(approximation_error(0.7, np.asarray(g)[act], kind=kind)), rtol=1e-3)
    assert np.all(w_m[~act] == 0.0)
    # Given weights with a mask: the inactive ones are ignored.
    w_bad = np.where(act, w_m, 1e3)
    np.testing.assert_allclose(float(approximation_error(0.7, g, w_bad, kind=kind, active=act)),
                               float(approximation_error(0.7, g, kind=kind, active=act)), rtol=1e-6)


@pytest.mark.parametrize("kind", ["I", "II"])
def test_float32_is_close_to_float64_for_small_K_and_never_negative(kind):
    def solve(hurst, K):  # 20 slots, K active: one compilation per precision
        g, m = speeds(K, 20.0, slots=20), active_mask(K, 20)
        return (optimal_weights(hurst, g, kind=kind, active=m),
                approximation_error(hurst, g, kind=kind, active=m))

    solve = jax.jit(solve)
    for hurst in HURSTS:
        for K in (1, 3, 5, 20):
            with jax.enable_x64(True):
                e64 = float(solve(hurst, K)[1])
                c = float(objective_terms(hurst, np.ones(1), 1.0, kind)[2])
            with jax.enable_x64(False):
                w32, e32 = solve(hurst, K)
                e32 = float(e32)
            assert w32.dtype == jnp.float32 and np.all(np.isfinite(np.asarray(w32)))
            assert e32 >= 0.0
            if K <= 3:
                assert abs(e32 - e64) < 2e-5 * c, (hurst, K, e32, e64)
            else:  # float32 resolves fewer directions of A: worse, but the same order
                assert e64 - 2e-5 * c < e32 < 3.0 * e64 + 2e-5 * c, (hurst, K, e32, e64)


def _fd(f, x, eps=1e-3):
    return (8 * (f(x + eps) - f(x - eps)) - (f(x + 2 * eps) - f(x - 2 * eps))) / (12 * eps)


@pytest.mark.parametrize("kind", ["I", "II"])
def test_gradients_in_hurst_match_finite_differences(kind, x64):
    g = speeds(5, 20.0)
    f = jax.jit(lambda h: jnp.concatenate([optimal_weights(h, g, kind=kind),
                                           approximation_error(h, g, kind=kind)[None]]))
    df = jax.jit(jax.jacfwd(f))
    for hurst in (0.25, 0.7):
        grad = np.asarray(df(hurst))
        # Fourth-order central differences with a step large enough that rounding noise in the
        # ill-conditioned solve (about 1e-9 |w|) stays below 1e-5 of the slope.
        fd = _fd(lambda h: np.asarray(f(h)), hurst)
        assert np.all(np.isfinite(grad))
        np.testing.assert_allclose(grad[:-1], fd[:-1], rtol=1e-5, atol=1e-5 * np.abs(fd[:-1]).max())
        np.testing.assert_allclose(grad[-1], fd[-1], rtol=1e-5, atol=1e-10)


def test_new_hurst_K_and_gamma_max_never_recompile():
    slots = 16

    @jax.jit
    def curve(hurst, K, gamma_max, T):  # the dashboard's kernel, in float32, with the VI gradient
        g = speeds(K, gamma_max, slots=slots)
        m = active_mask(K, slots)
        e, de = jax.value_and_grad(lambda h: approximation_error(h, g, None, T, "II", m))(hurst)
        return optimal_weights(hurst, g, T, "II", m), e, de

    cases = [(0.3, 3, 20.0, 1.0), (0.7, 10, 50.0, 2.0), (0.1, 16, 5.0, 0.5), (0.9, 1, 20.0, 1.0)]
    for hurst, K, gm, T in cases:
        w, e, de = curve(hurst, K, gm, T)
        assert np.all(np.isfinite(np.asarray(w))) and float(e) >= 0.0 and np.isfinite(float(de))
        assert np.all(np.asarray(w)[K:] == 0.0)
    assert curve._cache_size() == 1
    f = jax.jit(lambda h: approximation_error(h, speeds(5, 20.0), kind="I"))
    f(0.2), f(0.8)
    assert f._cache_size() == 1


# ------------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: optimal_weights(0.0, np.ones(2)), r"hurst must lie in \(0, 1\), got 0"),
        (lambda: optimal_weights(1.0, np.ones(2)), r"hurst must lie in \(0, 1\), got 1"),
        (lambda: approximation_error(1.3, np.ones(2)), r"hurst must lie in \(0, 1\), got 1.3"),
        (lambda: speeds(0, 20.0), r"K must lie in \[1, inf\), got 0"),
        (lambda: speeds(2.5, 20.0), r"K must be an integer >= 1, got 2.5"),
        (lambda: speeds(3, 0.0), r"gamma_max must lie in \(0, inf\), got 0"),
        (lambda: speeds(3, -2.0), r"gamma_max must lie in \(0, inf\), got -2"),
        (lambda: speeds(30, 20.0, slots=20), r"K must lie in \[1, 20\], got 30"),
        (lambda: active_mask(2.5, 20), r"K must be an integer in \[1, 20\], got 2.5"),
        (lambda: optimal_weights(0.5, np.ones(2), T=0.0), r"T must lie in \(0, inf\), got 0"),
        (lambda: approximation_error(0.5, np.ones(2), T=-1.0), r"T must lie in \(0, inf\), got -1"),
        (lambda: optimal_weights(0.5, np.ones(2), kind="III"), r"kind must be one of 'I' .*'II'.*got 'III'"),
        (lambda: optimal_weights(0.5, np.array([1.0, -1.0])), r"gammas must lie in \(0, inf\), got -1"),
        (lambda: exact_variance(1.0, 0.5, kind="RL"), r"kind must be one of"),
        (lambda: ma_variance(-1.0, 0.5, np.ones(2)), r"t must lie in \[0, inf\), got -1"),
    ],
)
def test_bad_input_names_the_parameter_and_range(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_validation_happens_before_tracing():
    # Under jit the traced hurst passes unchecked (documented); a concrete bad kind still fails at once.
    with pytest.raises(ValueError, match="kind"):
        jax.jit(lambda h: optimal_weights(h, np.ones(2), kind="x"))(0.5)
    out = jax.jit(lambda h: optimal_weights(h, np.ones(2)))(0.5)
    assert np.all(np.isfinite(np.asarray(out)))
