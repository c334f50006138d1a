r"""SDEs driven by Markov-approximate fBM, as ordinary SDEs in an augmented state.

Daems, Opper, Crevecoeur & Birdal, "Variational Inference for SDEs Driven by Fractional Noise"
(ICLR 2024), section 3.2. With the MA-fBM :math:`\hat B = \sum_k \omega_k Y^k` (type II) or
:math:`\sum_k\omega_k(Y^k - Y^k_0)` (type I) of :mod:`solverlab.fractional.markov`,

.. math::
    d\hat B_t = \sum_k \omega_k\,dY^k_t
             = -\Big(\sum_k \omega_k\gamma_k Y^k_t\Big)dt + \Big(\sum_k\omega_k\Big)dW_t,

so :math:`dX = b(t, X)\,dt + s(t, X)\,d\hat B_t` becomes, in :math:`Z = (X, Y^1, \dots, Y^K)`,

.. math::
    dX &= \Big[b(t, X) - s(t, X)\sum_k\omega_k\gamma_k Y^k\Big]dt + s(t, X)\Big(\sum_k\omega_k\Big)dW_t, \\
    dY^k &= -\gamma_k Y^k\,dt + dW_t,

a Markov SDE driven by *one* Brownian motion, solved by :func:`solverlab.sde.solve` with any of
chapter 02's solvers. :math:`X` has shape ``(d,)``; one scalar fBM drives every component
(:math:`s(t, X)` has the shape of :math:`X` and acts elementwise).

The speeds and weights travel in ``args`` (:func:`augmented_args`), not in the SDE object, so a new
Hurst index or ``gamma_max`` reuses the compiled solve. Wong-Zakai: the MA-fBM is a smooth-kernel
approximation, so with a state-dependent :math:`s` the Stratonovich reading is the natural one; for
the additive noise of the fractional OU process (:func:`fou_sde`) the two agree.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp

from ..errors import check_range
from ..sde import SDE
from .markov import _check_gammas, check_kind, sample_stationary, stationary_covariance

__all__ = [
    "augmented_sde",
    "augmented_state",
    "augmented_args",
    "split_state",
    "fou_sde",
    "fou_args",
    "linear_moments",
    "fou_moments",
]


@dataclasses.dataclass(frozen=True)
class _AugmentedDrift:
    """Drift of :math:`(X, Y)`; hashable through the user's functions (a static jit argument)."""

    drift: Callable
    diffusion: Callable

    def __call__(self, t, z, args):
        gammas, weights, user_args = args
        K = gammas.shape[0]
        x, y = z[:-K], z[-K:]
        s = self.diffusion(t, x, user_args)
        dx = self.drift(t, x, user_args) - s * jnp.dot(weights * gammas, y)
        return jnp.concatenate([dx, -gammas * y])


@dataclasses.dataclass(frozen=True)
class _AugmentedDiffusion:
    """Diffusion of :math:`(X, Y)`: a ``(d + K, 1)`` column, one Brownian motion for all."""

    diffusion: Callable

    def __call__(self, t, z, args):
        gammas, weights, user_args = args
        K = gammas.shape[0]
        x = z[:-K]
        s = self.diffusion(t, x, user_args) * jnp.sum(weights)
        return jnp.concatenate([s, jnp.ones((K,), z.dtype)])[:, None]


def augmented_sde(drift, diffusion, *, noise: str = "general", calculus: str = "stratonovich") -> SDE:
    r"""The augmented SDE in :math:`Z = (X, Y^1..Y^K)` for :math:`dX = b\,dt + s\,d\hat B^H`.

    The system is in the module docstring.

    Args:
        drift: :math:`b(t, x, \text{args})`, ``x`` of shape ``(d,)``, returns ``(d,)``.
        diffusion: :math:`s(t, x, \text{args})`, returns ``(d,)`` (elementwise on the one fBM).
        noise: ``"additive"`` when :math:`s` does not depend on ``x`` (then ShARK applies, as do
            Euler-Maruyama and Heun), else ``"general"`` (Euler-Maruyama, Heun). Milstein does not:
            it needs diagonal noise, and here one Brownian motion drives every component.
        calculus: ``"ito"`` or ``"stratonovich"`` (the same for additive noise).

    Returns:
        A :class:`solverlab.sde.SDE` with ``args = augmented_args(gammas, weights, args)``, a
        ``(d + K, 1)`` diffusion and a one-dimensional Brownian motion. Equal inputs give equal
        (hashable) SDEs, so rebuilding it does not recompile a solve.
    """
    if noise not in ("additive", "general"):
        raise ValueError(
            f"noise must be 'additive' or 'general' (one Brownian motion drives all), got {noise!r}"
        )
    if not callable(drift) or not callable(diffusion):
        raise ValueError("drift and diffusion must be functions f(t, x, args)")
    return SDE(_AugmentedDrift(drift, diffusion), _AugmentedDiffusion(diffusion), noise, calculus)


def augmented_args(gammas, weights, args: Any = None):
    """``args`` for :func:`augmented_sde`: ``(gammas, weights, args)`` as arrays (all traced)."""
    _check_gammas(gammas)
    dtype = jnp.result_type(float)
    g = jnp.asarray(gammas, dtype)
    w = jnp.asarray(weights, dtype)
    if w.shape != g.shape:
        raise ValueError(f"weights must have the shape of gammas {g.shape}, got {w.shape}")
    return (g, w, args)


def augmented_state(x0, gammas, kind: str = "II", key=None) -> jax.Array:
    r"""Initial state :math:`Z_0 = (X_0, Y_0)`, shape ``(d + K,)``.

    Type II: :math:`Y_0 = 0`. Type I: :math:`Y_0 \sim \mathcal N(0, \Sigma)`,
    :math:`\Sigma_{ij} = 1/(\gamma_i+\gamma_j)` (stationary start), drawn from ``key`` (required).
    ``x0``: scalar or ``(d,)``.
    """
    check_kind(kind)
    _check_gammas(gammas)
    dtype = jnp.result_type(float)
    x0 = jnp.atleast_1d(jnp.asarray(x0, dtype))
    if x0.ndim != 1:
        raise ValueError(f"x0 must be a scalar or a 1-d array, got shape {x0.shape}")
    g = jnp.asarray(gammas, dtype)
    if kind == "I":
        if key is None:
            raise ValueError("key must be a jax.random key for kind='I' (the stationary start), got None")
        y0 = sample_stationary(key, g)
    else:
        y0 = jnp.zeros(g.shape, dtype)
    return jnp.concatenate([x0, y0])


def split_state(z, K: int):
    """``(X, Y)`` from augmented states ``z`` of shape ``(..., d + K)``: ``(..., d)`` and ``(..., K)``."""
    return z[..., :-K], z[..., -K:]


# ----------------------------------------------------------------------------------------------
# The fractional Ornstein-Uhlenbeck process: dX = -theta X dt + sigma dB^H


def _fou_drift(t, x, args):
    theta, _ = args
    return -theta * x


def _fou_diffusion(t, x, args):
    _, sigma = args
    return sigma * jnp.ones_like(x)


def fou_sde() -> SDE:
    r"""The fractional OU process :math:`dX = -\theta X\,dt + \sigma\,d\hat B^H_t`, augmented.

    Additive noise (ShARK, Euler-Maruyama, Heun apply). ``args`` from :func:`fou_args`.
    """
    return augmented_sde(_fou_drift, _fou_diffusion, noise="additive")


def fou_args(theta, sigma, gammas, weights):
    """``args`` of :func:`fou_sde`: ``augmented_args(gammas, weights, (theta, sigma))``."""
    check_range("theta", theta)
    check_range("sigma", sigma)
    dtype = jnp.result_type(float)
    return augmented_args(gammas, weights, (jnp.asarray(theta, dtype), jnp.asarray(sigma, dtype)))


def _van_loan(M, Q, t):
    r""":math:`\int_0^t e^{Ms}Qe^{M^\top s}ds` and :math:`e^{Mt}` from one matrix exponential.

    Van Loan, "Computing integrals involving the matrix exponential" (1978).
    """
    n = M.shape[0]
    C = jnp.block([[-M, Q], [jnp.zeros_like(M), M.T]]) * t
    F = jax.scipy.linalg.expm(C)
    F12, F22 = F[:n, n:], F[n:, n:]
    return F22.T @ F12, F22.T


def linear_moments(M, v, m0, P0, ts):
    r"""Mean and covariance of the linear SDE :math:`dZ = MZ\,dt + v\,dW` at times ``ts``.

    .. math::
        \mathbb E Z_t = e^{Mt}m_0, \qquad
        \operatorname{Cov} Z_t = e^{Mt}P_0e^{M^\top t} + \int_0^t e^{Ms}vv^\top e^{M^\top s}ds.

    Van Loan's block exponential (:func:`_van_loan`) holds :math:`e^{-Mt}`, which overflows or
    cancels once :math:`\|M\|t` is large (fast OU speeds), so it is used only on a short step
    :math:`h = t/2^J` with :math:`\|M\|_1 h \le 1/2`, and the pair is doubled :math:`J` times,

    .. math::
        \Phi_{2h} = \Phi_h^2, \qquad Q_{2h} = \Phi_h Q_h \Phi_h^\top + Q_h,

    every term of which is bounded (scaling and squaring, as for :math:`e^{Mt}` itself).
    ``M`` ``(n, n)``, ``v`` ``(n,)``, ``m0`` ``(n,)``, ``P0`` ``(n, n)``, ``ts`` ``(T,)``; returns
    ``(T, n)`` and ``(T, n, n)``.
    """
    Q = jnp.outer(v, v)
    norm = jnp.max(jnp.sum(jnp.abs(M), axis=0))

    def one(t):
        doublings = jnp.clip(jnp.ceil(jnp.log2(jnp.maximum(2.0 * norm * t, 1.0))), 0, _MAX_DOUBLINGS)
        P, E = _van_loan(M, Q, t / 2.0**doublings)

        def double(i, pair):
            P, E = pair
            keep = i >= doublings
            return jnp.where(keep, P, E @ P @ E.T + P), jnp.where(keep, E, E @ E)

        P, E = jax.lax.fori_loop(0, _MAX_DOUBLINGS, double, (P, E))
        return E @ m0, E @ P0 @ E.T + P

    return jax.vmap(one)(jnp.asarray(ts, M.dtype))


#: Enough doublings for ||M|| t up to 2^60.
_MAX_DOUBLINGS = 60


def fou_moments(ts, x0, theta, sigma, gammas, weights, kind: str = "II"):
    r"""Exact mean and variance of :math:`X_t` for the augmented fOU system (scalar :math:`X`).

    :math:`Z = (X, Y)` solves the linear SDE :math:`dZ = MZ\,dt + v\,dW` with

    .. math::
        M = \begin{pmatrix} -\theta & -\sigma(\omega\odot\gamma)^\top \\
                            0 & -\operatorname{diag}\gamma \end{pmatrix},
        \qquad v = \begin{pmatrix}\sigma\sum_k\omega_k \\ \mathbf 1\end{pmatrix},

    from :math:`Z_0 = (x_0, 0)` (type II) or :math:`(x_0, Y_0)`, :math:`Y_0\sim\mathcal N(0,\Sigma)` (type I),
    so :func:`linear_moments` gives its law exactly.

    Returns:
        ``(mean, variance)`` of shape ``ts.shape`` (``ts`` 1-d).
    """
    check_kind(kind)
    _check_gammas(gammas)
    return _fou_moments(ts, x0, theta, sigma, gammas, weights, kind)


@functools.partial(jax.jit, static_argnames="kind")
def _fou_moments(ts, x0, theta, sigma, gammas, weights, kind):
    dtype = jnp.result_type(float)
    g = jnp.asarray(gammas, dtype)
    w = jnp.asarray(weights, dtype)
    theta = jnp.asarray(theta, dtype)
    sigma = jnp.asarray(sigma, dtype)
    K = g.shape[0]
    top = jnp.concatenate([-theta[None], -sigma * w * g])[None, :]
    bottom = jnp.concatenate([jnp.zeros((K, 1), dtype), -jnp.diag(g)], axis=1)
    M = jnp.concatenate([top, bottom], axis=0)
    v = jnp.concatenate([(sigma * jnp.sum(w))[None], jnp.ones((K,), dtype)])
    m0 = jnp.zeros((K + 1,), dtype).at[0].set(jnp.asarray(x0, dtype))
    P0 = jnp.zeros((K + 1, K + 1), dtype)
    if kind == "I":
        P0 = P0.at[1:, 1:].set(stationary_covariance(g))
    mean, cov = linear_moments(M, v, m0, P0, jnp.atleast_1d(jnp.asarray(ts, dtype)))
    return mean[:, 0], cov[:, 0, 0]
