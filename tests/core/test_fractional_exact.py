"""Exact fBM: covariance formulas, the laws of the Davies-Harte and Cholesky samplers, and the API."""

from decimal import Decimal, getcontext

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import linalg, stats

from solverlab.fractional import exact
from solverlab.fractional.covariance import check_hurst, fbm_covariance, fgn_autocovariance
from solverlab.fractional.exact import circulant_eigenvalues, fbm, fbm_cholesky, fgn

from .stats import Z, assert_same_law, assert_standard_normal, assert_uncorrelated, assert_variance

HURSTS = [0.1, 0.3, 0.5, 0.7, 0.9]


def assert_covariance(x, expected, name=""):
    """Entrywise: the mean of x_i x_j (zero-mean Gaussian rows) has SE sqrt((s_ii s_jj + s_ij^2)/N)."""
    x = np.asarray(x, np.float64)
    emp = x.T @ x / x.shape[0]
    d = np.diag(expected)
    se = np.sqrt((np.outer(d, d) + expected**2) / x.shape[0])
    worst = np.unravel_index(np.argmax(np.abs(emp - expected) / se), se.shape)
    err = abs(emp - expected)[worst] / se[worst]
    got, want = emp[worst], expected[worst]
    assert err < Z, f"{name}: entry {worst} is {got:.5g}, expected {want:.5g} ({err:.1f} SE)"


def assert_same_covariance(x, y, expected, name=""):
    """Two independent samples' second moments agree: SE of the difference uses both sizes."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    diff = x.T @ x / x.shape[0] - y.T @ y / y.shape[0]
    d = np.diag(expected)
    var = np.outer(d, d) + expected**2
    se = np.sqrt(var / x.shape[0] + var / y.shape[0])
    err = np.max(np.abs(diff) / se)
    assert err < Z, f"{name}: second moments differ by {err:.1f} SE"


def grid_covariance(n, hurst, T):
    ts = np.linspace(0.0, T, n + 1)[1:]
    return np.asarray(fbm_covariance(ts[:, None], ts[None, :], hurst), np.float64)


def fgn_toeplitz(n, hurst, dt):
    with jax.enable_x64(True):  # the reference in float64 whatever the samples' precision
        return linalg.toeplitz(np.asarray(fgn_autocovariance(jnp.arange(n), hurst, dt), np.float64))


# --- covariance formulas -----------------------------------------------------------------------


def _decimal_acov(k, hurst):
    getcontext().prec = 60
    a, k = 2 * Decimal(str(hurst)), Decimal(int(k))

    def p(x):
        return abs(x) ** a if x != 0 else Decimal(0)

    return float((p(k + 1) - 2 * p(k) + p(k - 1)) / 2)


def test_covariance_closed_forms(x64):
    ts = jnp.linspace(0.0, 3.0, 7)
    for h in HURSTS:
        c = fbm_covariance(ts[:, None], ts[None, :], h)
        np.testing.assert_allclose(jnp.diag(c), ts ** (2 * h), rtol=1e-14)
        np.testing.assert_allclose(c, c.T, rtol=0, atol=0)
        assert np.all(np.linalg.eigvalsh(np.asarray(c)[1:, 1:]) > 0)
        # Increment covariance from the fBM covariance, on a grid of step 0.25.
        dt, k = 0.25, jnp.arange(6.0)
        from_fbm = (
            fbm_covariance((k + 1) * dt, dt, h) - fbm_covariance(k * dt, dt, h)
            - fbm_covariance((k + 1) * dt, 0.0, h) + fbm_covariance(k * dt, 0.0, h)
        )
        np.testing.assert_allclose(fgn_autocovariance(k, h, dt), from_fbm, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(fgn_autocovariance(-k, h, dt), from_fbm, rtol=1e-12, atol=1e-15)
    # H = 1/2: Brownian motion, Cov = min(s, t), white increments.
    brownian = fbm_covariance(ts[:, None], ts[None, :], 0.5)
    np.testing.assert_allclose(brownian, jnp.minimum(ts[:, None], ts), atol=1e-15)
    white = fgn_autocovariance(jnp.arange(40), 0.5, 0.1)
    np.testing.assert_allclose(white, [0.1] + [0] * 39, atol=1e-15)


@pytest.mark.parametrize("hurst", HURSTS + [0.02, 0.98])
def test_autocovariance_is_accurate_at_large_lags(precision, hurst):
    # The plain second difference loses every digit at k = 2**18 in float32; the series does not.
    lags = [0, 1, 2, 15, 16, 17, 100, 2**14, 2**18, 10**6]
    got = np.asarray(fgn_autocovariance(jnp.asarray(lags), hurst), np.float64)
    want = np.array([_decimal_acov(k, hurst) for k in lags])
    rtol, atol = (2e-4, 2e-6) if precision == "float32" else (1e-11, 1e-14)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)
    far = np.asarray(lags[-3:], np.float64)  # and the asymptote H(2H-1) k^(2H-2)
    asymptote = hurst * (2 * hurst - 1) * far ** (2 * hurst - 2)
    np.testing.assert_allclose(got[-3:], asymptote, rtol=1e-3, atol=1e-12)


def test_covariance_functions_are_differentiable_in_hurst(x64):
    def total(h):
        return fgn_autocovariance(jnp.arange(40.0), h).sum()

    grad = jax.jit(jax.grad(total))
    h = 1e-6
    np.testing.assert_allclose(grad(0.3), (total(0.3 + h) - total(0.3 - h)) / (2 * h), rtol=1e-6)
    assert np.isfinite(jax.jit(jax.grad(lambda h: fbm_covariance(jnp.arange(3.0), 0.0, h).sum()))(0.7))


def test_covariance_bad_input():
    for bad in (0.0, 1.0, -0.2, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"hurst must (lie in \(0, 1\)|be finite), got"):
            check_hurst(bad)
    with pytest.raises(ValueError, match=r"hurst must lie in \(0, 1\), got 1.2"):
        fbm_covariance(0.5, 1.0, 1.2)
    with pytest.raises(ValueError, match=r"hurst must lie in \(0, 1\), got 0"):
        fgn_autocovariance(3, 0.0)
    with pytest.raises(ValueError, match=r"dt must lie in \(0, inf\), got -1"):
        fgn_autocovariance(3, 0.3, dt=-1.0)
    check_hurst(jnp.array([0.2, 0.8]))  # arrays of valid values pass
    jax.jit(check_hurst)(2.0)  # traced values pass unchecked


# --- the laws of the samplers ------------------------------------------------------------------


@pytest.mark.parametrize("hurst", HURSTS)
def test_davies_harte_covariance_matches_formula(x64, hurst):
    n, T = 16, 1.5
    paths = fbm(jax.random.key(1), n, hurst, T, batch_shape=(20_000,))
    assert_covariance(paths[:, 1:], grid_covariance(n, hurst, T), f"fbm H={hurst}")


@pytest.mark.parametrize("hurst", HURSTS)
def test_whitened_davies_harte_noise_is_iid_normal(precision, hurst):
    # L^{-1} x with the exact Cholesky factor is N(0, I) only if x has the exact covariance at
    # every lag: a check on the whole 512 x 512 matrix at once.
    n, paths = 512, 200
    x = np.asarray(fgn(jax.random.key(2), n, hurst, 2.0, batch_shape=(paths,)), np.float64)
    factor = np.linalg.cholesky(fgn_toeplitz(n, hurst, 2.0 / n))
    z = linalg.solve_triangular(factor, x.T, lower=True).T
    name = f"whitened fGn H={hurst} {precision}"
    assert_standard_normal(z, name)
    assert_variance(z, 1.0, name)
    assert_uncorrelated(z[:, 1:], z[:, :-1], name + " lag 1")
    assert_uncorrelated(z[1:], z[:-1], name + " across paths")
    p = stats.kstest(np.sum(z**2, axis=1), stats.chi2(n).cdf).pvalue  # x' C^{-1} x ~ chi2(n)
    assert p > 1e-4, f"{name}: quadratic forms, KS p-value {p:.2e}"


def test_hurst_one_half_is_brownian_motion(x64):
    n, T = 32, 2.0
    dt = T / n
    inc = np.asarray(fgn(jax.random.key(3), n, 0.5, T, batch_shape=(20_000,)))
    assert_covariance(inc, dt * np.eye(n), "H = 1/2 increments")
    assert_variance(inc, dt, "H = 1/2 increments")
    assert_uncorrelated(inc[:, 1:], inc[:, :-1], "consecutive increments")
    assert_standard_normal(inc / np.sqrt(dt), "H = 1/2 increments")
    np.testing.assert_allclose(circulant_eigenvalues(n, 0.5), np.ones(n + 1), atol=1e-13)


@pytest.mark.parametrize("hurst", HURSTS)
def test_davies_harte_and_cholesky_agree_in_law(x64, hurst):
    n, T, size = 12, 1.0, 20_000
    dh = np.asarray(fbm(jax.random.key(4), n, hurst, T, batch_shape=(size,)))
    ch = np.asarray(fbm_cholesky(jax.random.key(5), n, hurst, T, batch_shape=(size,)))
    cov = grid_covariance(n, hurst, T)
    assert_same_covariance(dh[:, 1:], ch[:, 1:], cov, f"DH vs Cholesky H={hurst}")
    assert_covariance(ch[:, 1:], cov, f"Cholesky H={hurst}")
    assert_same_law(dh.max(axis=1), ch.max(axis=1), f"running max H={hurst}")
    assert_same_law(dh[:, -1], ch[:, -1], f"B_T H={hurst}")


def test_float32_embedding_matches_float64():
    for hurst in HURSTS + [0.02, 0.98]:
        with jax.enable_x64(True):
            lam64 = np.asarray(circulant_eigenvalues(2**16, hurst))
            lam32 = circulant_eigenvalues(2**16, np.float32(hurst))
        assert lam32.dtype == jnp.float32 and lam64.min() > -1e-12 * lam64.max()
        np.testing.assert_allclose(np.asarray(lam32, np.float64), lam64, atol=1e-5 * lam64.max())


@pytest.mark.parametrize("n", [2, 3, 17, 1024])
def test_embedding_is_nonnegative(x64, n):
    for hurst in np.linspace(0.01, 0.99, 25):
        lam = np.asarray(circulant_eigenvalues(n, hurst))
        assert lam.min() > -1e-12 * lam.max(), (n, hurst, lam.min())


# --- shapes, scaling, determinism --------------------------------------------------------------


def test_shapes_batches_and_start_at_zero():
    key = jax.random.key(6)
    n = 48  # the n of the recompile test below: the shapes compiled here are shared
    for sampler in (fbm, fbm_cholesky):
        paths = sampler(key, n, 0.3, 2.0, batch_shape=(2, 3))
        assert paths.shape == (2, 3, n + 1) and paths.dtype == jnp.float32
        assert np.all(np.asarray(paths[..., 0]) == 0)
        assert len({tuple(p) for p in np.asarray(paths).reshape(6, n + 1)}) == 6  # not copies
        again = sampler(key, np.int32(n), 0.3, 2.0, batch_shape=(np.int64(2), 3))
        np.testing.assert_array_equal(paths, again)  # the key alone fixes the paths
        other = sampler(jax.random.key(7), n, 0.3, 2.0, batch_shape=(2, 3))
        assert not np.allclose(paths, other)
    assert fbm(key, n, 0.3).shape == (n + 1,)
    assert fbm(key, n, 0.3, batch_shape=2).shape == (2, n + 1)  # an int is a 1-d batch
    assert fbm(key, n, 0.3, batch_shape=(0,)).shape == (0, n + 1)
    assert fgn(key, n, 0.3, batch_shape=(2, 3)).shape == (2, 3, n)


def test_dtype_follows_the_inputs(x64):
    key = jax.random.key(6)
    assert fbm(key, 8, 0.3).dtype == jnp.float64  # Python floats: the default dtype
    assert fgn(key, 8, np.float32(0.3), np.float32(1.0)).dtype == jnp.float32
    assert fbm_cholesky(key, 8, 0.3).dtype == jnp.float64


def test_fbm_is_the_partial_sums_of_fgn(x64):
    key = jax.random.key(8)
    for hurst in HURSTS:
        b = np.asarray(fbm(key, 1000, hurst, 3.0, batch_shape=(4,)))
        x = np.asarray(fgn(key, 1000, hurst, 3.0, batch_shape=(4,)))
        sums = np.concatenate([np.zeros((4, 1)), np.cumsum(x, axis=1)], axis=1)
        np.testing.assert_allclose(b, sums, atol=1e-12 * np.abs(sums).max())


@pytest.mark.parametrize("hurst", [0.3, 0.8])
def test_horizon_scaling_is_self_similarity(x64, hurst):
    key = jax.random.key(9)
    unit = fbm(key, 64, hurst, 1.0, batch_shape=(20_000,))
    scaled = fbm(key, 64, hurst, 3.0, batch_shape=(20_000,))
    np.testing.assert_allclose(scaled, 3.0**hurst * unit, rtol=1e-12, atol=1e-15)  # same key
    assert_variance(scaled[:, -1], 3.0 ** (2 * hurst), f"B_T, H={hurst}")  # Var B_T = T^2H
    assert_variance(scaled[:, 32], 1.5 ** (2 * hurst), f"B_T/2, H={hurst}")
    inc = fgn(key, 64, hurst, 3.0, batch_shape=(20_000,))
    assert_variance(inc[:, 0], (3.0 / 64) ** (2 * hurst), f"increment, H={hurst}")


def test_long_float32_paths_are_finite_with_the_right_spread():
    for hurst in (0.1, 0.9):
        paths = fbm(jax.random.key(10), 2**15, hurst, batch_shape=(400,))
        assert paths.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(paths)))
        assert_variance(paths[:, -1], 1.0, f"B_1 float32 H={hurst}")
        assert_variance(paths[:, 2**14], 0.5 ** (2 * hurst), f"B_1/2 float32 H={hurst}")
        inc = paths[:, 1:3] - paths[:, :2]
        assert_variance(inc, 2.0 ** (-15 * 2 * hurst), f"first increments float32 H={hurst}")


# --- compiles and errors -----------------------------------------------------------------------


def test_a_new_hurst_or_horizon_does_not_recompile():
    key = jax.random.key(11)
    fbm(key, 48, 0.3, batch_shape=(2,))
    fbm_cholesky(key, 48, 0.3)
    dh, ch = exact._davies_harte._cache_size(), exact._cholesky_paths._cache_size()
    for hurst, T in [(0.7, 1.0), (0.5, 2), (np.float64(0.2), 3.0), (jnp.asarray(0.9), np.float32(0.5))]:
        fbm(key, 48, hurst, T, batch_shape=(2,))
        fbm_cholesky(key, 48, hurst, T)
    assert exact._davies_harte._cache_size() == dh and exact._cholesky_paths._cache_size() == ch
    # Wrapped in the user's own jit (n and batch_shape static): one compile for every hurst.
    draw = jax.jit(fbm, static_argnums=1, static_argnames="batch_shape")
    for hurst in (0.2, 0.4, 0.6, 0.8):
        assert bool(jnp.all(jnp.isfinite(draw(key, 48, hurst, batch_shape=(3,)))))
    assert draw._cache_size() == 1
    sweep = jax.vmap(lambda h: fbm(key, 48, h))(jnp.array([0.2, 0.5, 0.8]))  # sweeps are vmaps
    assert sweep.shape == (3, 49)
    np.testing.assert_allclose(sweep[1], fbm(key, 48, 0.5), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("sampler", [fbm, fgn, fbm_cholesky])
def test_bad_input_raises_before_compiling(sampler):
    key = jax.random.key(0)
    before = exact._davies_harte._cache_size(), exact._cholesky_paths._cache_size()
    cases = [
        (dict(hurst=1.0), r"hurst must lie in \(0, 1\), got 1$"),
        (dict(hurst=0.0), r"hurst must lie in \(0, 1\), got 0$"),
        (dict(hurst=-0.3), r"hurst must lie in \(0, 1\), got -0.3$"),
        (dict(hurst=float("nan")), r"hurst must be finite, got nan"),
        (dict(hurst=jnp.array([0.3, 0.4])), r"hurst must be a scalar, got shape \(2,\)"),
        (dict(n=1), r"n must be an int >= 2, got 1$"),
        (dict(n=0), r"n must be an int >= 2, got 0$"),
        (dict(n=8.0), r"n must be an int >= 2, got 8.0"),
        (dict(n=True), r"n must be an int >= 2, got True"),
        (dict(n="8"), r"n must be an int >= 2, got '8'"),
        (dict(T=0.0), r"T must lie in \(0, inf\), got 0$"),
        (dict(T=-2.0), r"T must lie in \(0, inf\), got -2$"),
        (dict(T=float("inf")), r"T must be finite, got inf"),
        (dict(batch_shape=(-1,)), r"batch_shape must be a tuple of non-negative ints, got \(-1,\)"),
        (dict(batch_shape=(2.5,)), r"batch_shape must be a tuple of non-negative ints, got \(2.5,\)"),
        (dict(batch_shape="ab"), r"batch_shape must be a tuple of non-negative ints, got 'ab'"),
        (dict(key=3), r"key must be a jax.random key \(e.g. jax.random.key\(3\)\)"),
    ]
    for bad, message in cases:
        args = dict(key=key, n=37, hurst=0.3, T=1.0, batch_shape=())
        args.update(bad)
        with pytest.raises(ValueError, match=message):
            sampler(args["key"], args["n"], args["hurst"], args["T"], args["batch_shape"])
    after = exact._davies_harte._cache_size(), exact._cholesky_paths._cache_size()
    assert after == before  # every check ran before anything was traced


def test_traced_out_of_range_values_give_nan():
    key = jax.random.key(0)
    draw = jax.jit(lambda h, T: fbm(key, 8, h, T))
    assert bool(jnp.all(jnp.isnan(draw(1.5, 1.0))))
    assert bool(jnp.all(jnp.isnan(draw(0.5, -1.0))))
    assert bool(jnp.all(jnp.isfinite(draw(0.5, 1.0))))
