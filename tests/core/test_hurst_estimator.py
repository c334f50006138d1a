"""The Hurst estimator: its interval covers the truth at the nominal rate; its standard error is exact."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from solverlab.fractional.covariance import fbm_covariance
from solverlab.fractional.exact import fbm
from solverlab.fractional.hurst import (
    HurstEstimate,
    _relative_covariance,
    _slope_weights,
    estimate_hurst,
)

from .stats import Z

HURSTS = [0.1, 0.3, 0.5, 0.7, 0.9]
PATHS, STEPS = 400, 1024


@pytest.fixture(scope="module")
def estimates():
    """Estimates from 400 independent float32 paths of 1024 steps for each H (one compile each)."""
    out = {}
    for i, hurst in enumerate(HURSTS):
        paths = fbm(jax.random.key(100 + i), STEPS, hurst, batch_shape=(PATHS,))
        out[hurst] = jax.tree_util.tree_map(np.asarray, estimate_hurst(paths))
    return out


def coverage(est, hurst):
    low, high = est.interval()
    return np.mean((low <= hurst) & (hurst <= high))


@pytest.mark.parametrize("hurst", HURSTS)
def test_interval_covers_the_true_index(estimates, hurst):
    est = estimates[hurst]
    assert est.hurst.shape == (PATHS,) and est.hurst.dtype == np.float32
    se = np.sqrt(0.95 * 0.05 / PATHS)  # binomial SE of the coverage
    cov = coverage(est, hurst)
    assert abs(cov - 0.95) < Z * se, f"H={hurst}: coverage {cov:.3f}, allowed 0.95 +- {Z * se:.3f}"
    # Unbiased to within the sampling error of a mean of 400 estimates.
    spread = est.hurst.std(ddof=1)
    bias = est.hurst.mean() - hurst
    assert abs(bias) < Z * spread / np.sqrt(PATHS), f"H={hurst}: bias {bias:.4f}"
    # The standard error is the spread of the estimates: var ratio has SE sqrt(2/(N-1)).
    ratio = spread**2 / np.mean(est.stderr**2)
    tol = Z * np.sqrt(2 / (PATHS - 1))
    assert abs(ratio - 1) < tol, f"H={hurst}: var(H_hat)/se^2 = {ratio:.3f}, allowed 1 +- {tol:.3f}"


def test_pooled_coverage_is_nominal(estimates):
    covered = np.concatenate([
        (lambda lo, hi: (lo <= h) & (h <= hi))(*estimates[h].interval()) for h in HURSTS
    ])
    se = np.sqrt(0.95 * 0.05 / covered.size)
    assert abs(covered.mean() - 0.95) < Z * se, f"pooled coverage {covered.mean():.4f} +- {Z * se:.4f}"
    # A 68% interval (z = 1) is honest too, not only the 95% one.
    inner = np.concatenate([
        (lambda lo, hi: (lo <= h) & (h <= hi))(*estimates[h].interval(z=1.0)) for h in HURSTS
    ])
    p = 0.6827
    se = np.sqrt(p * (1 - p) / inner.size)
    assert abs(inner.mean() - p) < Z * se, f"pooled 1-sigma coverage {inner.mean():.4f}"


def _brute_force_relative_covariance(hurst, n, dilations):
    """Cov(S_m, S_m') / (E S_m E S_m') from the dense covariance of the path, 2 ||A_p C A_q'||_F^2."""
    ts = np.arange(n + 1.0)
    cov = np.asarray(fbm_covariance(ts[:, None], ts[None, :], hurst))
    filters = []
    for m in dilations:
        a = np.zeros((n - 2 * m + 1, n + 1))
        i = np.arange(n - 2 * m + 1)
        a[i, i], a[i, i + m], a[i, i + 2 * m] = 1.0, -2.0, 1.0
        filters.append(a)
    mean = [np.trace(a @ cov @ a.T) for a in filters]
    return np.array([
        [2 * np.sum((ap @ cov @ aq.T) ** 2) / (mean[p] * mean[q]) for q, aq in enumerate(filters)]
        for p, ap in enumerate(filters)
    ])


@pytest.mark.parametrize("dilations", [(1, 2), (1, 2, 4, 8), (1, 3)])
def test_standard_error_is_the_exact_delta_method(x64, dilations):
    for hurst in (0.05, 0.3, 0.5, 0.75, 0.97):
        want = _brute_force_relative_covariance(hurst, 40, dilations)
        got = jax.jit(_relative_covariance, static_argnums=(1, 2))(jnp.asarray(hurst), 40, dilations)
        np.testing.assert_allclose(got, want, rtol=1e-10)
    # With dilations (1, 2) the estimate is 1/2 log2(V2/V1) plus the second-order bias term.
    np.testing.assert_allclose(_slope_weights((1, 2)), [-1 / np.log(2), 1 / np.log(2)])


def test_scale_and_linear_drift_do_not_matter(x64):
    paths = fbm(jax.random.key(1), 256, 0.35, batch_shape=(3,))
    t = jnp.linspace(0.0, 1.0, 257)
    base = estimate_hurst(paths)
    moved = estimate_hurst(-7.5 * paths + 3.0 - 2.0 * t)
    np.testing.assert_allclose(moved.hurst, base.hurst, rtol=1e-9)
    np.testing.assert_allclose(moved.stderr, base.stderr, rtol=1e-9)
    one = estimate_hurst(paths[2])  # the batch is a batch of independent estimates
    np.testing.assert_allclose([one.hurst, one.stderr], [base.hurst[2], base.stderr[2]], rtol=1e-12)


def test_batched_jitted_and_long_paths(x64):
    paths = fbm(jax.random.key(2), 2**16, 0.7, batch_shape=(2, 3))
    est = estimate_hurst(paths)
    assert isinstance(est, HurstEstimate) and est.hurst.shape == (2, 3) and est.stderr.shape == (2, 3)
    assert est.hurst.dtype == jnp.float64
    jitted = jax.jit(estimate_hurst, static_argnames="dilations")(paths)
    np.testing.assert_allclose(jitted.hurst, est.hurst, rtol=1e-12)
    # Long paths pin H down: se ~ 0.004 at 65,536 steps, and the truth lies within Z of them.
    assert np.all(np.asarray(est.stderr) < 0.005)
    assert np.all(np.abs(np.asarray(est.hurst) - 0.7) < Z * np.asarray(est.stderr))
    lo, hi = est.interval(z=Z)
    assert np.all((np.asarray(lo) < 0.7) & (0.7 < np.asarray(hi)))


def test_numpy_and_integer_input():
    walk = np.cumsum(np.random.default_rng(0).choice([-1, 1], size=4097))  # a random walk, H = 1/2
    est = estimate_hurst(walk)
    assert est.hurst.dtype == jnp.float32
    assert abs(float(est.hurst) - 0.5) < Z * float(est.stderr)


def test_bad_input():
    path = jnp.zeros(40)
    with pytest.raises(ValueError, match=r"path must have at least 18 points along its last axis "
                                         r"for dilations \(1, 2, 4, 8\), got 17"):
        estimate_hurst(jnp.zeros((3, 17)))
    with pytest.raises(ValueError, match=r"path must have at least 6 points .* got a scalar"):
        estimate_hurst(1.0, dilations=(1, 2))
    with pytest.raises(ValueError, match=r"at least 2 distinct positive ints, got \(2, 2\)"):
        estimate_hurst(path, dilations=(2, 2))
    with pytest.raises(ValueError, match=r"dilations must be an int >= 1, got 0"):
        estimate_hurst(path, dilations=(0, 2))
    with pytest.raises(ValueError, match=r"dilations must be an int >= 1, got 1.5"):
        estimate_hurst(path, dilations=(1.5, 2))
    with pytest.raises(ValueError, match=r"dilations must be a sequence of positive ints, got 3"):
        estimate_hurst(path, dilations=3)
