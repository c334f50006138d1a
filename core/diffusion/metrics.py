r"""How good are samples? Distances between sample sets and to a Gaussian mixture's law.

* :func:`sliced_w2`: the sliced 2-Wasserstein distance (Rabin et al. 2011; Bonneel et al. 2015),
  :math:`\mathrm{SW}_2^2(\mu, \nu) = \mathbb E_\theta\,W_2^2(\theta_\#\mu, \theta_\#\nu)` over uniform
  directions :math:`\theta`, each one-dimensional :math:`W_2` from sorted projections;
* :func:`frechet_distance`: the Fréchet distance between the Gaussians fitted to two sample sets,
  :math:`\|\mu_1 - \mu_2\|^2 + \operatorname{tr}\big(\Sigma_1 + \Sigma_2 - 2(\Sigma_1^{1/2}\Sigma_2\Sigma_1^{1/2})^{1/2}\big)`
  (Dowson & Landau 1982; FID, Heusel et al. 2017, uses it on network features);
* :func:`mode_weight_tv`: the total variation between the mixture's weights and the fractions of
  samples that the mixture assigns to each component (most probable component at noise zero);
* :func:`terminal_error`: the RMS distance to reference endpoints from the same noise.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.stats import multivariate_normal

from ..errors import check_range

__all__ = ["sliced_w2", "frechet_distance", "mode_weight_tv", "terminal_error"]


def _points(name, x):
    x = jnp.asarray(x)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"{name} must be a (n, d) array of n >= 2 samples, got shape {x.shape}")
    return x


def sliced_w2(x, y, key, n_projections: int = 256) -> jax.Array:
    r"""Sliced 2-Wasserstein distance between two equally sized sample sets ``(n, d)``.

    Monte Carlo over ``n_projections`` random directions from ``key``.
    """
    x, y = _points("x", x), _points("y", y)
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {x.shape} and {y.shape}")
    check_range("n_projections", n_projections, low=1)
    theta = jax.random.normal(key, (x.shape[1], int(n_projections)), x.dtype)
    theta = theta / jnp.linalg.norm(theta, axis=0)
    px, py = jnp.sort(x @ theta, axis=0), jnp.sort(y @ theta, axis=0)
    return jnp.sqrt(jnp.mean((px - py) ** 2))


def _sqrtm_psd(a):
    w, v = jnp.linalg.eigh(a)
    return (v * jnp.sqrt(jnp.clip(w, 0.0))) @ v.T


def frechet_distance(x, y) -> jax.Array:
    """Fréchet (2-Wasserstein) distance squared between Gaussians fitted to ``x`` and ``y`` ``(n, d)``."""
    x, y = _points("x", x), _points("y", y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same dimension, got {x.shape[1]} and {y.shape[1]}")
    mx, my = x.mean(0), y.mean(0)
    cx, cy = jnp.atleast_2d(jnp.cov(x.T)), jnp.atleast_2d(jnp.cov(y.T))
    root = _sqrtm_psd(cx)
    cross = _sqrtm_psd(root @ cy @ root)  # symmetric, so eigh applies
    return jnp.sum((mx - my) ** 2) + jnp.trace(cx + cy - 2.0 * cross)


def mode_weight_tv(mixture, x, label=None) -> jax.Array:
    r"""Total variation :math:`\tfrac12\sum_k |\hat\pi_k - \pi_k|` between the (class) weights and the
    fractions of ``x`` whose most probable component (at noise level zero) is ``k``."""
    x = _points("x", x)
    weights = mixture.class_weights(label)
    logpdf = jax.vmap(lambda m, c: multivariate_normal.logpdf(x, m, c), out_axes=-1)(mixture.means, mixture.covs)
    owner = jnp.argmax(logpdf + jnp.log(weights), axis=-1)  # components outside the class have log 0 = -inf
    fractions = jnp.mean(jax.nn.one_hot(owner, weights.shape[0], dtype=x.dtype), axis=0)
    return 0.5 * jnp.sum(jnp.abs(fractions - weights))


def terminal_error(x, reference) -> jax.Array:
    """RMS over samples of the Euclidean distance between samples and their reference endpoints."""
    x, reference = jnp.asarray(x), jnp.asarray(reference)
    if x.shape != reference.shape:
        raise ValueError(f"x and reference must have the same shape, got {x.shape} and {reference.shape}")
    return jnp.sqrt(jnp.mean(jnp.sum((x - reference) ** 2, axis=-1)))
