"""The bridge formulas against an independent derivation by quadrature, and the midpoint closed form."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from solverlab.brownian._bridge import bridge_mean_cov, split, split_midpoint
from solverlab.brownian._increment import from_moments

# (W, H, K) over [0, 1] as Ito integrals of these kernels: the Legendre functionals.
WHOLE = [lambda u: np.ones_like(u), lambda u: 0.5 - u, lambda u: 1 / 12 - u * (1 - u) / 2]


def _piece(f, a, b):
    """Kernel of a component over the sub-interval [a, b], rescaled to that interval."""
    return lambda u: np.where((u >= a) & (u < b), f((u - a) / (b - a)), 0.0)


def _inner(f, g, a, b, n=12):
    """Exact for the piecewise polynomials here: Gauss-Legendre on [a, b]."""
    x, w = np.polynomial.legendre.leggauss(n)
    u = 0.5 * (b - a) * x + 0.5 * (a + b)
    return 0.5 * (b - a) * np.sum(w * f(u) * g(u))


@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("rho", [0.03, 0.25, 0.5, 0.61, 0.9])
def test_bridge_mean_and_covariance_match_projection(d, rho):
    left = [_piece(f, 0.0, rho) for f in WHOLE[:d]]
    whole = WHOLE[:d]
    c_fe = np.array([[_inner(f, g, 0.0, rho) for g in whole] for f in left])
    c_ee = np.array([[_inner(f, g, 0.0, 1.0) for g in whole] for f in whole])
    c_ff = np.array([[_inner(f, g, 0.0, rho) for g in left] for f in left])
    a_expected = c_fe @ np.linalg.inv(c_ee)
    s_expected = c_ff - c_fe @ np.linalg.inv(c_ee) @ c_fe.T
    with jax.enable_x64(True):
        a, s = bridge_mean_cov(rho, d)
    np.testing.assert_allclose(np.asarray(a), a_expected, atol=1e-12)
    np.testing.assert_allclose(np.asarray(s), s_expected, atol=1e-12)


@pytest.mark.parametrize("d", [1, 2, 3])
def test_midpoint_closed_form_equals_general_split(d):
    with jax.enable_x64(True):
        key = jax.random.key(3)
        v = jax.random.normal(key, (d, 5))
        noise = jax.random.normal(jax.random.fold_in(key, 1), (d, 5))
        h = 0.37
        (hl, ml), (hr, mr) = split(h, v, 0.5, noise)
        even, odd = split_midpoint(h, v, noise)
        np.testing.assert_allclose(from_moments(hl, ml), even + odd, atol=1e-13)
        np.testing.assert_allclose(from_moments(hr, mr), even - odd, atol=1e-13)


def test_split_at_the_ends_gives_an_empty_piece():
    with jax.enable_x64(True):
        v = jnp.array([[0.3], [0.1], [-0.02]])
        noise = jnp.ones((3, 1))
        (hl, ml), (hr, mr) = split(0.5, v, 0.0, noise)
        assert float(hl) == 0.0 and np.all(np.asarray(ml) == 0.0)
        np.testing.assert_allclose(from_moments(hr, mr), v, atol=1e-15)
        (hl, ml), (hr, mr) = split(0.5, v, 1.0, noise)
        np.testing.assert_allclose(from_moments(hl, ml), v, atol=1e-15)
        assert float(hr) == 0.0


@pytest.mark.parametrize("d", [1, 2, 3])
def test_pieces_are_continuous_in_the_split_point(d):
    # One leaf, one noise draw: the cut pieces move continuously with rho, across rho = 1/2 too.
    with jax.enable_x64(True):
        v = jnp.asarray([0.4, -0.1, 0.03][:d])[:, None]
        noise = jnp.asarray([0.7, -1.3, 0.5][:d])[:, None]
        def max_step(n):
            rhos = jnp.linspace(0.0, 1.0, n)
            left = jax.vmap(lambda r: from_moments(*split(0.2, v, r, noise)[0]))(rhos)
            return np.abs(np.diff(np.asarray(left), axis=0)).max()

        # Continuous (Holder-1/2 at the ends, like the bridge): a 100x finer grid gives steps at
        # least 5x smaller; a jump would not shrink at all.
        assert max_step(200_001) < max_step(2_001) / 5
        below = from_moments(*split(0.2, v, 0.5 - 1e-9, noise)[0])
        above = from_moments(*split(0.2, v, 0.5 + 1e-9, noise)[0])
        np.testing.assert_allclose(below, above, atol=1e-7)


def test_public_split_increment_returns_increments_that_join_back(x64):
    from solverlab.brownian import BrownianIncrement, split_increment
    from solverlab.brownian._increment import join, to_moments

    whole = BrownianIncrement(W=jnp.asarray(0.3), H=jnp.asarray(-0.05))
    left, right = split_increment(0.8, whole, 0.3, jnp.asarray([0.2, -1.0]))
    assert left.K is None and right.K is None
    h, m = join(0.24, to_moments(0.24, left.stack()), 0.56, to_moments(0.56, right.stack()))
    np.testing.assert_allclose(from_moments(h, m), whole.stack(), atol=1e-14)
