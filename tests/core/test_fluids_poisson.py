"""Fast Poisson/Helmholtz solves by sine and cosine transforms: the transforms against SciPy, exactness
for the discrete problem, second-order convergence to manufactured solutions, batching and jit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.fft as sfft

from solverlab.fluids import poisson
from solverlab.fluids.poisson import dct2, dst1, idct2, idst1, solve_dirichlet, solve_neumann


def fit_order(ns, errors):
    """Slope of log(error) against log(h = 1/n)."""
    return np.polyfit(np.log(1.0 / np.asarray(ns, float)), np.log(errors), 1)[0]


def lap_dirichlet(u, hx, hy):
    """Five-point -Laplacian of interior values ``u`` with zero walls (NumPy reference)."""
    p = np.pad(u, 1)
    return ((2 * p[1:-1, 1:-1] - p[2:, 1:-1] - p[:-2, 1:-1]) / hx**2
            + (2 * p[1:-1, 1:-1] - p[1:-1, 2:] - p[1:-1, :-2]) / hy**2)


def lap_neumann(u, hx, hy):
    """Cell-centred five-point -Laplacian with mirror ghost cells (zero normal derivative)."""
    p = np.pad(u, 1, mode="edge")
    return ((2 * p[1:-1, 1:-1] - p[2:, 1:-1] - p[:-2, 1:-1]) / hx**2
            + (2 * p[1:-1, 1:-1] - p[1:-1, 2:] - p[1:-1, :-2]) / hy**2)


# --- transforms ---------------------------------------------------------------------------------


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_transforms_match_scipy_and_invert(x64, axis):
    x = np.random.default_rng(0).standard_normal((7, 9, 5))
    # SciPy's unnormalised DST-I/DCT-II carry a factor 2 (sums over the doubled sequence).
    np.testing.assert_allclose(dst1(x, axis), sfft.dst(x, 1, axis=axis) / 2, rtol=0, atol=1e-12)
    np.testing.assert_allclose(dct2(x, axis), sfft.dct(x, 2, axis=axis) / 2, rtol=0, atol=1e-12)
    np.testing.assert_allclose(idst1(dst1(x, axis), axis), x, rtol=0, atol=1e-13)
    np.testing.assert_allclose(idct2(dct2(x, axis), axis), x, rtol=0, atol=1e-13)


# --- exact for the discrete problem -------------------------------------------------------------


def test_dirichlet_solves_the_five_point_system(x64):
    rng = np.random.default_rng(1)
    f = rng.standard_normal((2, 11, 6))  # a batch of two, a non-square grid
    hx, hy = 1 / 12, 0.3 / 7
    for shift in (0.0, 5.0):
        u = np.asarray(solve_dirichlet(f, hx, hy, shift))
        for b in range(2):
            resid = lap_dirichlet(u[b], hx, hy) + shift * u[b] - f[b]
            assert np.abs(resid).max() < 1e-10 * np.abs(f).max()


def test_dirichlet_eigenfunctions_exactly(x64):
    # sin(k pi x) sin(l pi y) on the nodes is an eigenvector of -Delta_h: u = f / lambda to rounding.
    n, k, l = 16, 3, 5
    x = np.arange(1, n) / n
    f = np.sin(k * np.pi * x)[:, None] * np.sin(l * np.pi * x)[None, :]
    lam = 4 * n**2 * (np.sin(k * np.pi / (2 * n)) ** 2 + np.sin(l * np.pi / (2 * n)) ** 2)
    np.testing.assert_allclose(solve_dirichlet(f, 1 / n), f / lam, rtol=0, atol=1e-15)
    np.testing.assert_allclose(poisson.dirichlet_eigenvalues(n - 1, 1 / n)[k - 1], 4 * n**2 * np.sin(k * np.pi / (2 * n)) ** 2)


def test_neumann_solves_the_cell_centred_system(x64):
    rng = np.random.default_rng(2)
    f = rng.standard_normal((10, 7))
    hx, hy = 0.1, 1 / 7
    u = np.asarray(solve_neumann(f, hx, hy))
    # At shift 0 the mean of f (no solution) is dropped and u has zero mean.
    assert abs(u.mean()) < 1e-13
    np.testing.assert_allclose(lap_neumann(u, hx, hy), f - f.mean(), rtol=0, atol=1e-11)
    u = np.asarray(solve_neumann(f, hx, hy, shift=2.0))
    np.testing.assert_allclose(lap_neumann(u, hx, hy) + 2.0 * u, f, rtol=0, atol=1e-11)


# --- convergence to the PDE ---------------------------------------------------------------------


def test_dirichlet_second_order_manufactured(x64):
    # u = (x - x^3) sin(pi y) on [0, 1] x [0, 2]: zero on the walls, not a discrete eigenfunction;
    # -Delta u + sigma u = sin(pi y) [6x + pi^2 (x - x^3)] + sigma u.
    ns, errors, sigma = [16, 32, 64, 128], [], 3.0
    for n in ns:
        hx, hy = 1 / n, 2 / (2 * n)
        x = np.arange(1, n) * hx
        y = np.arange(1, 2 * n) * hy
        X, Y = np.meshgrid(x, y, indexing="ij")
        exact = (X - X**3) * np.sin(np.pi * Y)
        f = np.sin(np.pi * Y) * (6 * X + np.pi**2 * (X - X**3)) + sigma * exact
        errors.append(np.abs(np.asarray(solve_dirichlet(f, hx, hy, sigma)) - exact).max())
    order = fit_order(ns, errors)
    assert 1.95 < order < 2.05, (errors, order)


def test_neumann_second_order_manufactured(x64):
    # u = (3x^2 - 2x^3) cos(pi y): zero normal derivative on every wall, zero mean;
    # -Delta u = cos(pi y) [12x - 6 + pi^2 (3x^2 - 2x^3)].
    ns, errors = [16, 32, 64, 128], []
    for n in ns:
        c = (np.arange(n) + 0.5) / n
        X, Y = np.meshgrid(c, c, indexing="ij")
        exact = (3 * X**2 - 2 * X**3) * np.cos(np.pi * Y)
        f = np.cos(np.pi * Y) * (12 * X - 6 + np.pi**2 * (3 * X**2 - 2 * X**3))
        u = np.asarray(solve_neumann(f, 1 / n))
        errors.append(np.abs((u - u.mean()) - (exact - exact.mean())).max())
    order = fit_order(ns, errors)
    assert 1.9 < order < 2.1, (errors, order)


# --- JAX transformations ------------------------------------------------------------------------


def test_jit_vmap_and_traced_shift():
    f = jnp.asarray(np.random.default_rng(3).standard_normal((4, 15, 15)), jnp.float32)
    solve = jax.jit(lambda f, s: solve_dirichlet(f, 1 / 16, shift=s))
    batched = solve(f, 1.0)
    mapped = jax.vmap(lambda g: solve_dirichlet(g, 1 / 16, shift=1.0))(f)
    np.testing.assert_allclose(batched, mapped, rtol=1e-5, atol=1e-7)
    assert batched.dtype == jnp.float32
    # a new shift reuses the compiled solve
    size = solve._cache_size()
    solve(f, 2.0)
    assert solve._cache_size() == size
    # differentiable in the shift (e.g. for an implicit step's dt): grad against a central difference
    g = jax.grad(lambda s: jnp.sum(solve_dirichlet(f[0], 1 / 16, shift=s)))(1.0)
    fd = (jnp.sum(solve_dirichlet(f[0], 1 / 16, shift=1.01)) - jnp.sum(solve_dirichlet(f[0], 1 / 16, shift=0.99))) / 0.02
    np.testing.assert_allclose(g, fd, rtol=2e-2)


def test_bad_input_is_refused_before_compiling():
    from solverlab.fluids.poisson import solve_dirichlet, solve_neumann

    f = np.ones((6, 6))
    for solve in (solve_dirichlet, solve_neumann):
        with pytest.raises(ValueError, match=r"shift must lie in \[0, inf\), got -1"):
            solve(f, 0.1, shift=-1.0)
        with pytest.raises(ValueError, match=r"hx must lie in \(0, inf\), got 0"):
            solve(f, 0.0)
        with pytest.raises(ValueError, match=r"hy must lie in \(0, inf\), got -0.1"):
            solve(f, 0.1, -0.1)
        with pytest.raises(ValueError, match=r"f must have at least 2 dimensions"):
            solve(np.ones(6), 0.1)
