"""Fixed-grid Brownian paths: the laws, and coarsening by Chen's relation is exact."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from solverlab.brownian import BrownianGrid, coarsen

from .stats import assert_uncorrelated, assert_variance


def test_grid_increments_have_the_right_law(x64):
    grid = BrownianGrid(0.0, 2.0, 4000, (5,), jax.random.key(0), levy_area="space-time-time")
    inc = grid.increments()
    dt = 2.0 / 4000
    assert inc.W.shape == (4000, 5) and inc.K.shape == (4000, 5)
    assert_variance(inc.W, dt, "W")
    assert_variance(inc.H, dt / 12, "H")
    assert_variance(inc.K, dt / 720, "K")
    assert_uncorrelated(inc.W, inc.H, "W, H")
    assert_uncorrelated(inc.W[1:], inc.W[:-1], "consecutive W")
    np.testing.assert_allclose([grid.ts[0], grid.ts[-1]], [0.0, 2.0])
    np.testing.assert_allclose(grid.path()[-1], inc.W.sum(0), rtol=1e-12)


def test_coarsen_is_exact_against_direct_integrals(x64):
    # M1 = int_0^T W_r dr computed step by step, independently of Chen's relation.
    n, factor = 96, 96
    grid = BrownianGrid(0.0, 1.5, n, (), jax.random.key(3), levy_area="space-time-time")
    inc = grid.increments()
    dt = 1.5 / n
    coarse = coarsen(inc, dt, factor)
    w_left = jnp.concatenate([jnp.zeros(1), jnp.cumsum(inc.W)[:-1]])
    m1 = jnp.sum(dt * w_left + dt * (inc.H + 0.5 * inc.W))
    t_left = jnp.arange(n) * dt
    # int over step k of W_r r dr, from the step's own moments (M1_k, M2_k) shifted to time 0.
    m1_k = dt * (inc.H + 0.5 * inc.W)
    m2_k = dt**2 * (0.5 * inc.H + inc.W / 3.0 - inc.K)
    m2 = jnp.sum(w_left * (t_left * dt + 0.5 * dt**2) + m2_k + t_left * m1_k)
    T = 1.5
    np.testing.assert_allclose(coarse.W[0], inc.W.sum(), rtol=1e-12)
    np.testing.assert_allclose(coarse.H[0], m1 / T - coarse.W[0] / 2, atol=1e-12)
    np.testing.assert_allclose(
        coarse.K[0], m1 / (2 * T) - m2 / T**2 + coarse.W[0] / 12, atol=1e-12
    )


def test_coarse_steps_have_the_coarse_law(x64):
    grid = BrownianGrid(0.0, 1.0, 8 * 3000, (), jax.random.key(4), levy_area="space-time")
    dt = 1.0 / (8 * 3000)
    coarse = coarsen(grid.increments(), dt, 8)
    assert coarse.W.shape == (3000,)
    assert_variance(coarse.W, 8 * dt, "coarse W")
    assert_variance(coarse.H, 8 * dt / 12, "coarse H")
    assert_uncorrelated(coarse.W, coarse.H, "coarse W, H")


def test_grid_bad_input():
    key = jax.random.key(0)
    with pytest.raises(ValueError, match=r"n \(number of steps\) must be an int >= 1, got 0"):
        BrownianGrid(0.0, 1.0, 0, (), key)
    with pytest.raises(ValueError, match=r"t1 must be greater than t0"):
        BrownianGrid(1.0, 0.0, 10, (), key)
    inc = BrownianGrid(0.0, 1.0, 10, (), key).increments()
    with pytest.raises(ValueError, match=r"factor must divide the number of steps 10, got 3"):
        coarsen(inc, 0.1, 3)
    with pytest.raises(ValueError, match=r"dt must lie in \(0, inf\)"):
        coarsen(inc, -0.1, 2)


def test_numpy_ints_are_welcome_and_bools_are_not():
    grid = BrownianGrid(0.0, 1.0, np.int64(8), (np.int32(2),), jax.random.key(0))
    assert grid.increments().W.shape == (8, 2)
    assert coarsen(grid.increments(), 1 / 8, np.int64(4)).W.shape == (2, 2)
    with pytest.raises(ValueError, match=r"shape must be a tuple of non-negative ints, got \(True,\)"):
        BrownianGrid(0.0, 1.0, 8, (True,), jax.random.key(0))
    with pytest.raises(ValueError, match=r"n \(number of steps\) must be an int >= 1, got 2.0"):
        BrownianGrid(0.0, 1.0, 2.0, (), jax.random.key(0))
