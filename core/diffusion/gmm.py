r"""Gaussian mixtures with an exact score: diffusion models whose "network" is a closed form.

A data law :math:`p_0 = \sum_k \pi_k\,\mathcal N(\mu_k, \Sigma_k)` (weights :math:`\pi_k`, means
:math:`\mu_k \in \mathbb R^d`, full covariances :math:`\Sigma_k`, a class label :math:`c_k` per
component) pushed through the forward process :math:`x_t = \alpha x_0 + \sigma\varepsilon`,
:math:`\varepsilon \sim \mathcal N(0, I)`, stays a mixture:

.. math::
    p_t(x) = \sum_k \pi_k\, \mathcal N\big(x;\ \alpha\mu_k,\ C_k\big), \qquad
    C_k = \alpha^2 \Sigma_k + \sigma^2 I .

With :math:`r_k = x - \alpha\mu_k`, the eigendecomposition :math:`C_k = Q_k\,\mathrm{diag}(\alpha^2 v_k + \sigma^2)\,Q_k^\top` and the
responsibilities :math:`\gamma_k(x) = \pi_k \mathcal N(x; \alpha\mu_k, C_k) / p_t(x)` (computed by
log-sum-exp, so no component underflows the others away),

.. math::
    \nabla_x \log p_t(x) = -\sum_k \gamma_k(x)\, C_k^{-1} r_k, \qquad
    \hat\varepsilon(x) = -\sigma \nabla_x \log p_t(x),

    \hat x_0(x) = \mathbb E[x_0 \mid x_t = x]
                = \sum_k \gamma_k(x)\big(\mu_k + \alpha \Sigma_k C_k^{-1} r_k\big)
                = \frac{x + \sigma^2 \nabla_x \log p_t(x)}{\alpha} .

The last equality is Tweedie's formula (Efron 2011; Robbins 1956); the middle form is Gaussian
conditioning per component and stays finite as :math:`\alpha \to 0`, so that is the one computed.
The class-conditional law :math:`p_t(x \mid c)` is the same mixture restricted to the components with
label :math:`c` (weights renormalised), and classifier-free guidance (Ho & Salimans 2022) is

.. math::
    \hat\varepsilon_w(x \mid c) = \hat\varepsilon(x) + w\,\big(\hat\varepsilon(x \mid c) - \hat\varepsilon(x)\big),

exactly the conditional model at :math:`w = 1` and the unconditional one at :math:`w = 0`.
Since every quantity is exact, sampler error (chapter 08) is measured without any training error on
top (as in Karras et al., "Elucidating the design space of diffusion-based generative models", 2022).
"""

from __future__ import annotations

import math
from functools import partial

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from ..errors import check_range, concrete_value

__all__ = ["GMMModel", "GaussianMixture", "model_fn", "random_mixture", "ring"]

_WEIGHT_SUM_TOL = 1e-5


def _float_dtype():
    return jnp.asarray(0.0).dtype


class GaussianMixture(eqx.Module):
    r"""A Gaussian mixture :math:`\sum_k \pi_k \mathcal N(\mu_k, \Sigma_k)` with class labels
    (an equinox module: a pytree, so it passes through ``jit``/``vmap``/``grad``).

    Fields: ``weights`` (K,), ``means`` (K, d), ``covs`` (K, d, d) symmetric positive definite,
    ``labels`` (K,) int (default all 0). Concrete inputs are checked: shapes agree, weights are
    positive and sum to 1 (within 1e-5), covariances are symmetric positive definite. The
    eigendecompositions :math:`\Sigma_k = Q_k\,\mathrm{diag}(v_k)\,Q_k^\top` are computed once here
    (fields ``cov_eigvals``, ``cov_eigvecs``): every noised covariance :math:`\alpha^2\Sigma_k + \sigma^2 I
    = Q_k\,\mathrm{diag}(\alpha^2 v_k + \sigma^2)\,Q_k^\top` is then inverted and its log-determinant
    taken with matrix products alone, with no factorisation per model evaluation (which also keeps
    LAPACK, and its thread pools, out of the samplers' loops).

    Every method at a noise level takes ``(x, alpha, sigma)`` for :math:`x_t = \alpha x_0 + \sigma
    \varepsilon` with ``x`` of shape ``(d,)`` or ``(..., d)`` and scalar ``alpha >= 0``,
    ``sigma >= 0`` (not both zero), and an optional ``label``: ``None`` for the whole mixture, an int
    (traced allowed) for the components carrying that label.
    """

    weights: jax.Array
    means: jax.Array
    covs: jax.Array
    labels: jax.Array
    cov_eigvals: jax.Array
    cov_eigvecs: jax.Array

    def __init__(self, weights, means, covs, labels=None):
        dtype = _float_dtype()
        w, m, c = (jnp.asarray(a, dtype) for a in (weights, means, covs))
        if m.ndim != 2:
            raise ValueError(f"means must have shape (K, d), got shape {m.shape}")
        K, d = m.shape
        if K < 1 or d < 1:
            raise ValueError(f"means must have K >= 1 and d >= 1, got shape {m.shape}")
        if w.shape != (K,):
            raise ValueError(f"weights must have shape (K,) = ({K},), got shape {w.shape}")
        if c.shape != (K, d, d):
            raise ValueError(f"covs must have shape (K, d, d) = ({K}, {d}, {d}), got shape {c.shape}")
        lab = jnp.zeros((K,), jnp.int32) if labels is None else jnp.asarray(labels)
        if lab.shape != (K,):
            raise ValueError(f"labels must have shape (K,) = ({K},), got shape {lab.shape}")
        if not jnp.issubdtype(lab.dtype, jnp.integer):
            raise ValueError(f"labels must be integers, got dtype {lab.dtype}")
        _check_weights(weights)
        _check_covs(covs)
        check_range("means", means)  # finite
        self.weights, self.means, self.covs, self.labels = w, m, c, lab.astype(jnp.int32)
        self.cov_eigvals, self.cov_eigvecs = jnp.linalg.eigh(0.5 * (c + jnp.swapaxes(c, -1, -2)))

    # ------------------------------------------------------------------ shapes and moments
    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def _log_weights(self, label=None):
        logw = jnp.log(self.weights)
        if label is None:
            return logw
        self._check_label(label)
        logw = jnp.where(self.labels == jnp.asarray(label, jnp.int32), logw, -jnp.inf)
        return logw - logsumexp(logw)  # renormalised over the class

    def _check_label(self, label):
        lab = concrete_value(label)
        if lab is None:
            return
        if lab.ndim != 0 or not np.issubdtype(lab.dtype, np.integer):
            raise ValueError(f"label must be a scalar int, got {label!r}")
        present = concrete_value(self.labels)
        if present is not None and int(lab) not in set(present.tolist()):
            raise ValueError(f"label must be one of {sorted(set(present.tolist()))}, got {int(lab)}")

    def class_weights(self, label=None) -> jax.Array:
        """Component weights of the (class-conditional) mixture, renormalised; shape (K,)."""
        return jax.nn.softmax(self._log_weights(label))

    def mean(self, label=None) -> jax.Array:
        r"""Mean :math:`\sum_k \pi_k \mu_k` of the data law (or of class ``label``); shape (d,)."""
        return self.class_weights(label) @ self.means

    def cov(self, label=None) -> jax.Array:
        r"""Covariance :math:`\sum_k \pi_k(\Sigma_k + \mu_k\mu_k^\top) - m m^\top`; shape (d, d)."""
        p = self.class_weights(label)
        m = p @ self.means
        second = jnp.einsum("k,kij->ij", p, self.covs) + jnp.einsum("k,ki,kj->ij", p, self.means, self.means)
        return second - jnp.outer(m, m)

    def noised(self, alpha, sigma) -> GaussianMixture:
        r"""The law of :math:`x_t = \alpha x_0 + \sigma\varepsilon` as a mixture (means
        :math:`\alpha\mu_k`, covariances :math:`\alpha^2\Sigma_k + \sigma^2 I`)."""
        alpha, sigma = self._noise_level(alpha, sigma)
        eye = jnp.eye(self.dim, dtype=self.means.dtype)
        covs = alpha**2 * self.covs + sigma**2 * eye
        return GaussianMixture(self.weights, alpha * self.means, covs, self.labels)

    # ------------------------------------------------------------------ the closed forms
    def _noise_level(self, alpha, sigma):
        check_range("alpha", alpha, low=0.0)
        check_range("sigma", sigma, low=0.0)
        a, s = concrete_value(alpha), concrete_value(sigma)
        if a is not None and s is not None and np.all(a == 0) and np.all(s == 0):
            raise ValueError("alpha and sigma must not both be 0 (the noised law would be degenerate)")
        dtype = self.means.dtype
        alpha, sigma = jnp.asarray(alpha, dtype), jnp.asarray(sigma, dtype)
        if alpha.ndim or sigma.ndim:
            raise ValueError(
                f"alpha and sigma must be scalars (vmap over them for several levels), got shapes "
                f"{alpha.shape} and {sigma.shape}"
            )
        return alpha, sigma

    def _prepare(self, x, alpha, sigma, label):
        """Checks at the Python boundary; returns x flattened to (n, d), its batch shape, alpha, sigma."""
        alpha, sigma = self._noise_level(alpha, sigma)
        if label is not None:
            self._check_label(label)
            label = jnp.asarray(label, jnp.int32)
        x = jnp.asarray(x, self.means.dtype)
        if x.ndim == 0 or x.shape[-1] != self.dim:
            raise ValueError(f"x must have shape (..., d) with d = {self.dim}, got shape {x.shape}")
        return x.reshape(-1, self.dim), x.shape[:-1], alpha, sigma, label

    def _components(self, X, alpha, sigma):
        """Per-component log densities (K, n) and C_k^{-1} r_k (K, n, d) at flat X (n, d)."""
        d = self.dim
        lam = alpha**2 * self.cov_eigvals + sigma**2  # eigenvalues of C_k = alpha^2 Sigma_k + sigma^2 I, (K, d)
        R = X[None, :, :] - alpha * self.means[:, None, :]  # (K, n, d)
        P = jnp.einsum("knd,kde->kne", R, self.cov_eigvecs)  # Q_k^T r in the eigenbasis
        W = jnp.einsum("kne,kde->knd", P / lam[:, None, :], self.cov_eigvecs)  # C_k^{-1} r
        logdet = jnp.sum(jnp.log(lam), axis=-1)  # (K,)
        logN = -0.5 * jnp.sum(P**2 / lam[:, None, :], axis=-1) - 0.5 * logdet[:, None] \
            - 0.5 * d * math.log(2 * math.pi)
        return logN, W

    def _responsibilities(self, logN, label):
        a = self._log_weights(label)[:, None] + logN  # (K, n)
        lse = logsumexp(a, axis=0)
        return lse, jnp.exp(a - lse[None, :])

    def _call(self, kind, x, alpha, sigma, label=None, w=None):
        X, batch, alpha, sigma, label = self._prepare(x, alpha, sigma, label)
        out = _evaluate(self, X, alpha, sigma, label, w, kind)
        return out.reshape(batch) if kind == "log_prob" else out.reshape(*batch, self.dim)

    def log_prob(self, x, alpha=1.0, sigma=0.0, label=None) -> jax.Array:
        r""":math:`\log p_t(x)` (or :math:`\log p_t(x \mid c)`); shape ``x.shape[:-1]``.

        The defaults ``alpha=1, sigma=0`` give the data log density."""
        return self._call("log_prob", x, alpha, sigma, label)

    def score(self, x, alpha, sigma, label=None) -> jax.Array:
        r""":math:`\nabla_x \log p_t(x) = -\sum_k \gamma_k C_k^{-1}(x - \alpha\mu_k)`; shape of ``x``."""
        return self._call("score", x, alpha, sigma, label)

    def eps(self, x, alpha, sigma, label=None) -> jax.Array:
        r"""Noise prediction :math:`\mathbb E[\varepsilon \mid x_t = x] = -\sigma \nabla_x\log p_t(x)`."""
        return self._call("eps", x, alpha, sigma, label)

    def x0(self, x, alpha, sigma, label=None) -> jax.Array:
        r"""Data prediction :math:`\mathbb E[x_0 \mid x_t = x] = \sum_k \gamma_k(\mu_k + \alpha\Sigma_k
        C_k^{-1} r_k)` (equal to Tweedie's :math:`(x + \sigma^2\nabla\log p_t)/\alpha`, finite as
        :math:`\alpha \to 0`)."""
        return self._call("x0", x, alpha, sigma, label)

    def guided_eps(self, x, alpha, sigma, label, w) -> jax.Array:
        r"""Classifier-free guidance :math:`\hat\varepsilon + w(\hat\varepsilon(\cdot\mid c) -
        \hat\varepsilon)` with guidance scale ``w >= 0`` (label and ``w`` may be traced); the
        eigendecompositions are shared by both terms."""
        check_range("guidance", w, low=0.0)
        if label is None:
            raise ValueError("label must be a class label for guided_eps, got None")
        return self._call("guided", x, alpha, sigma, label, jnp.asarray(w, self.means.dtype))

    # ------------------------------------------------------------------ sampling
    def sample(self, key, n: int, label=None, return_components: bool = False):
        r"""``n`` exact draws of the data law (or of class ``label``), shape (n, d): a component
        :math:`k \sim \mathrm{Categorical}(\pi)`, then :math:`\mu_k + \mathrm{chol}(\Sigma_k)\,z`.
        With ``return_components`` also the drawn component indices (n,)."""
        if not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"n must be an integer in [0, inf), got {n!r}")
        if label is not None:
            self._check_label(label)
            label = jnp.asarray(label, jnp.int32)
        x, comp = _sample(self, key, int(n), label)
        return (x, comp) if return_components else x


@partial(jax.jit, static_argnames=("kind",))
def _evaluate(gmm, X, alpha, sigma, label, w, kind):
    logN, W = gmm._components(X, alpha, sigma)
    if kind == "guided":
        _, gu = gmm._responsibilities(logN, None)
        _, gc = gmm._responsibilities(logN, label)
        g = gu + w * (gc - gu)  # eps is linear in the responsibilities
        return sigma * jnp.einsum("kn,knd->nd", g, W)
    lse, g = gmm._responsibilities(logN, label)
    if kind == "log_prob":
        return lse
    if kind == "score":
        return -jnp.einsum("kn,knd->nd", g, W)
    if kind == "eps":
        return sigma * jnp.einsum("kn,knd->nd", g, W)
    if kind == "x0":
        return g.T @ gmm.means + alpha * jnp.einsum("kn,kde,kne->nd", g, gmm.covs, W)
    raise ValueError(f"unknown kind {kind!r}")


@partial(jax.jit, static_argnames=("n",))
def _sample(gmm, key, n, label):
    kc, kz = jax.random.split(key)
    comp = jax.random.categorical(kc, gmm._log_weights(label), shape=(n,))
    chol = jnp.linalg.cholesky(gmm.covs)
    z = jax.random.normal(kz, (n, gmm.dim), gmm.means.dtype)
    return gmm.means[comp] + jnp.einsum("nij,nj->ni", chol[comp], z), comp


def _check_weights(weights):
    w = concrete_value(weights)
    if w is None:
        return
    check_range("weights", w, low=0.0, low_open=True)
    total = float(np.sum(w, dtype=np.float64))
    if abs(total - 1.0) > _WEIGHT_SUM_TOL:
        raise ValueError(f"weights must sum to 1 (within {_WEIGHT_SUM_TOL:g}), got sum {total:g}")


def _check_covs(covs):
    c = concrete_value(covs)
    if c is None:
        return
    check_range("covs", c)  # finite
    c = c.astype(np.float64)
    scale = np.max(np.abs(c), axis=(-2, -1), keepdims=True)
    asym = np.max(np.abs(c - np.swapaxes(c, -1, -2)) / np.maximum(scale, 1e-300), axis=(-2, -1))
    if np.any(asym > 1e-6):
        k = int(np.argmax(asym))
        raise ValueError(f"covs must be symmetric, component {k} has relative asymmetry {asym[k]:g}")
    eig_min = np.linalg.eigvalsh(c)[..., 0]
    if np.any(eig_min <= 0):
        k = int(np.argmin(eig_min))
        raise ValueError(
            f"covs must be positive definite (smallest eigenvalue in (0, inf)), component {k} has "
            f"smallest eigenvalue {eig_min[k]:g}"
        )


# ---------------------------------------------------------------------- model functions
class GMMModel(eqx.Module):
    r"""The noise-prediction model :math:`(x, t) \mapsto \hat\varepsilon_w(x, t \mid c)` of a
    mixture under a schedule; built by :func:`model_fn`.

    ``label`` and ``guidance`` are array leaves, so passing the model as an argument to a jitted
    function (``jax.jit(lambda m, x, t: m(x, t))`` or ``eqx.filter_jit``) does not recompile when a
    dashboard slider changes them. The schedule is static (it must be hashable).
    """

    gmm: GaussianMixture
    label: jax.Array | None
    guidance: jax.Array
    schedule: object = eqx.field(static=True)

    # Hashable by identity, so the model can also be a static argument of a jitted sampler
    # (``jax.jit(..., static_argnames="model_fn")``); that path recompiles for every new model.
    def __hash__(self):
        return id(self)

    def __eq__(self, other):
        return self is other

    def __call__(self, x, t):
        """Noise prediction at ``x`` ((d,) or (n, d)) and time ``t`` (scalar, or (n,) per row)."""
        t = jnp.asarray(t)
        if t.ndim:
            return jax.vmap(self.__call__)(x, t)
        alpha, sigma = self.schedule.alpha(t), self.schedule.sigma(t)
        if self.label is None:
            return self.gmm.eps(x, alpha, sigma)
        return self.gmm.guided_eps(x, alpha, sigma, self.label, self.guidance)


def model_fn(gmm: GaussianMixture, schedule, label=None, guidance=1.0) -> GMMModel:
    r"""Noise prediction ``f(x, t)`` of ``gmm`` under ``schedule`` (any object with ``alpha(t)``,
    ``sigma(t)``): unconditional for ``label=None``, otherwise classifier-free guided with scale
    ``guidance >= 0`` (``1`` = the exact conditional model). Returns a callable :class:`GMMModel`."""
    check_range("guidance", guidance, low=0.0)
    if label is not None:
        gmm._check_label(label)
        label = jnp.asarray(label, jnp.int32)
    return GMMModel(gmm, label, jnp.asarray(guidance, gmm.means.dtype), schedule)


# ---------------------------------------------------------------------- example mixtures
def ring(
    K: int = 8,
    radius: float = 4.0,
    radial_std: float = 0.15,
    tangential_std: float = 0.6,
    n_classes: int | None = None,
    weights=None,
) -> GaussianMixture:
    r"""K anisotropic Gaussians on a circle in 2-D: component :math:`k` sits at angle
    :math:`2\pi k/K`, elongated along the circle (``tangential_std``) and thin across it
    (``radial_std``); label :math:`k \bmod` ``n_classes`` (default ``K``: one class per component).
    Uniform weights unless ``weights`` is given."""
    if not isinstance(K, (int, np.integer)) or K < 1:
        raise ValueError(f"K must be an integer in [1, inf), got {K!r}")
    check_range("radius", radius, low=0.0)
    check_range("radial_std", radial_std, low=0.0, low_open=True)
    check_range("tangential_std", tangential_std, low=0.0, low_open=True)
    n_classes = K if n_classes is None else n_classes
    if not isinstance(n_classes, (int, np.integer)) or not 1 <= n_classes <= K:
        raise ValueError(f"n_classes must be an integer in [1, K={K}], got {n_classes!r}")
    theta = 2 * np.pi * np.arange(K) / K
    means = radius * np.stack([np.cos(theta), np.sin(theta)], axis=1)
    rot = np.stack([np.stack([np.cos(theta), -np.sin(theta)], -1), np.stack([np.sin(theta), np.cos(theta)], -1)], -2)
    D = np.diag([radial_std**2, tangential_std**2])
    covs = rot @ D @ np.swapaxes(rot, -1, -2)
    covs = 0.5 * (covs + np.swapaxes(covs, -1, -2))
    w = np.full(K, 1.0 / K) if weights is None else np.asarray(weights, np.float64)
    return GaussianMixture(w, means, covs, np.arange(K) % n_classes)


def random_mixture(
    key,
    d: int = 64,
    K: int = 8,
    n_classes: int | None = None,
    mean_scale: float = 3.0,
    var_range=(0.05, 1.0),
    concentration: float = 5.0,
) -> GaussianMixture:
    r"""A random mixture in :math:`\mathbb R^d`: means :math:`\mathcal N(0, s^2 I)` with
    :math:`s` = ``mean_scale`` (well separated against unit-size covariances once :math:`d` is large),
    covariances :math:`Q\,\mathrm{diag}(v)\,Q^\top` with a Haar-random rotation :math:`Q` and variances
    log-uniform in ``var_range``, weights Dirichlet(``concentration``), labels :math:`k \bmod`
    ``n_classes`` (default ``K``)."""
    if not isinstance(d, (int, np.integer)) or d < 1:
        raise ValueError(f"d must be an integer in [1, inf), got {d!r}")
    if not isinstance(K, (int, np.integer)) or K < 1:
        raise ValueError(f"K must be an integer in [1, inf), got {K!r}")
    n_classes = K if n_classes is None else n_classes
    if not isinstance(n_classes, (int, np.integer)) or not 1 <= n_classes <= K:
        raise ValueError(f"n_classes must be an integer in [1, K={K}], got {n_classes!r}")
    check_range("mean_scale", mean_scale, low=0.0)
    lo, hi = var_range
    check_range("var_range[0]", lo, low=0.0, low_open=True)
    check_range("var_range[1]", hi, low=lo)
    check_range("concentration", concentration, low=0.0, low_open=True)
    means, covs, w = _random_parts(key, d, K, float(mean_scale), float(lo), float(hi), float(concentration))
    return GaussianMixture(w, means, covs, jnp.arange(K) % n_classes)


@partial(jax.jit, static_argnums=(1, 2, 3, 4, 5, 6))
def _random_parts(key, d, K, mean_scale, lo, hi, concentration):
    dtype = _float_dtype()
    km, kq, kv, kw = jax.random.split(key, 4)
    means = mean_scale * jax.random.normal(km, (K, d), dtype)
    Q, Rq = jnp.linalg.qr(jax.random.normal(kq, (K, d, d), dtype))
    Q = Q * jnp.sign(jnp.diagonal(Rq, axis1=-2, axis2=-1))[:, None, :]  # Haar measure
    v = jnp.exp(jax.random.uniform(kv, (K, d), dtype, math.log(lo), math.log(hi)))
    covs = jnp.einsum("kij,kj,klj->kil", Q, v, Q)
    covs = 0.5 * (covs + jnp.swapaxes(covs, -1, -2))
    w = jax.random.dirichlet(kw, jnp.full((K,), concentration, dtype))
    return means, covs, w / jnp.sum(w)
