r"""Covariances of fractional Brownian motion and of its increments, fractional Gaussian noise.

Standard fractional Brownian motion :math:`B^H` with Hurst index :math:`H \in (0, 1)` is the centred
Gaussian process with

.. math::
    \operatorname{Cov}(B^H_s, B^H_t) = \tfrac12\big(|s|^{2H} + |t|^{2H} - |t - s|^{2H}\big),

so :math:`\operatorname{Var} B^H_t = |t|^{2H}` and the increments over a grid of step :math:`\Delta t`,
fractional Gaussian noise :math:`X_j = B^H_{(j+1)\Delta t} - B^H_{j\Delta t}`, are stationary with

.. math::
    r(k) = \operatorname{Cov}(X_j, X_{j+k})
         = \tfrac{\Delta t^{2H}}{2}\big(|k+1|^{2H} - 2|k|^{2H} + |k-1|^{2H}\big)

(Mandelbrot & Van Ness 1968). :math:`H = 1/2` is Brownian motion (independent increments); the
increments are positively correlated for :math:`H > 1/2` and negatively for :math:`H < 1/2`, and
:math:`r(k) \sim H(2H-1)\,k^{2H-2}` for large lags.

The second difference in :math:`r(k)` cancels catastrophically at large lags (at :math:`k = 2^{18}`
and :math:`H = 0.9` its terms are :math:`10^{11}` times the result: no digit survives in float32),
so for :math:`|k| \ge 16` it is summed as the binomial series

.. math::
    r(k) = \Delta t^{2H} |k|^{2H} \sum_{m \ge 1} \binom{2H}{2m} k^{-2m},

which converges like :math:`k^{-2m}` and is accurate to the last bit of the dtype.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..errors import check_range

__all__ = ["check_hurst", "fbm_covariance", "fgn_autocovariance"]

# Lags at or above this use the binomial series; its terms shrink by at least 1/_SERIES_FROM**2.
_SERIES_FROM = 16.0
_SERIES_TERMS = 8  # (1/256)**8 ~ 5e-20: float64 round-off


def check_hurst(hurst) -> None:
    """Raise ``ValueError`` unless a concrete ``hurst`` lies in the open interval (0, 1).

    The message names the parameter, the value and the range, e.g.
    ``hurst must lie in (0, 1), got 1.2``. Traced values pass unchecked (callers document what a
    traced value outside the range gives: NaN in :mod:`.exact`).
    """
    check_range("hurst", hurst, low=0.0, high=1.0, low_open=True, high_open=True)


def _abs_pow(x, p):
    """:math:`|x|^p` for :math:`p > 0`, with 0 at 0 and a finite gradient in ``p`` there."""
    x = jnp.abs(x)
    positive = x > 0
    safe = jnp.where(positive, x, 1.0)
    return jnp.where(positive, jnp.exp(p * jnp.log(safe)), 0.0)


def fbm_covariance(s, t, hurst):
    r"""Covariance of standard fractional Brownian motion at times ``s`` and ``t``.

    .. math::
        \operatorname{Cov}(B^H_s, B^H_t) = \tfrac12\big(|s|^{2H} + |t|^{2H} - |t - s|^{2H}\big).

    Args:
        s, t: times, arrays that broadcast together (e.g. ``ts[:, None]`` and ``ts[None, :]`` for
            the covariance matrix of a grid).
        hurst: Hurst index :math:`H \in (0, 1)`, a scalar or an array broadcasting with ``s``, ``t``.

    Returns:
        The covariance, of the broadcast shape. Concrete ``hurst`` outside (0, 1) raises
        ``ValueError``; it is differentiable in ``hurst``.
    """
    check_hurst(hurst)
    return _fbm_covariance(*_as_float(s, t, hurst))


@jax.jit
def _fbm_covariance(s, t, hurst):
    a = 2 * hurst
    return 0.5 * (_abs_pow(s, a) + _abs_pow(t, a) - _abs_pow(t - s, a))


def fgn_autocovariance(k, hurst, dt=1.0):
    r"""Autocovariance at lag ``k`` of fractional Gaussian noise, the increments of fBM on a grid.

    .. math::
        r(k) = \tfrac{\Delta t^{2H}}{2}\big(|k+1|^{2H} - 2|k|^{2H} + |k-1|^{2H}\big),

    summed as a binomial series for :math:`|k| \ge 16` (see the module notes), so it stays accurate
    in float32 at any lag.

    Args:
        k: lags (integers or reals; :math:`r(-k) = r(k)`), any shape.
        hurst: Hurst index :math:`H \in (0, 1)`, broadcasting with ``k``.
        dt: grid step :math:`\Delta t > 0`.

    Returns:
        :math:`r(k)`, of the broadcast shape of ``k``, ``hurst`` and ``dt``.
    """
    check_hurst(hurst)
    check_range("dt", dt, low=0.0, low_open=True)
    return _fgn_autocovariance(*_as_float(k, hurst, dt))


@jax.jit  # one compiled kernel instead of ~60 small eager ops per call
def _fgn_autocovariance(k, hurst, dt):
    return _abs_pow(dt, 2 * hurst) * unit_autocovariance(k, 2 * hurst)


def unit_autocovariance(k, a):
    r"""fGn autocovariance at unit step with exponent :math:`a = 2H` (no checks; traced-safe).

    :math:`\tfrac12(|k+1|^a - 2|k|^a + |k-1|^a)` for :math:`|k| < 16`, else the series
    :math:`|k|^a \sum_{m=1}^{8} \binom{a}{2m} k^{-2m}` (Horner in :math:`k^{-2}`).
    """
    k = jnp.abs(k)
    direct = 0.5 * (_abs_pow(k + 1, a) - 2 * _abs_pow(k, a) + _abs_pow(k - 1, a))
    far = k >= _SERIES_FROM
    kf = jnp.where(far, k, _SERIES_FROM)  # keeps the unused branch finite (and its gradient)
    return jnp.where(far, _abs_pow(kf, a) * _binomial_series(kf**-2, a), direct)


def autocovariance_row(n: int, a):
    r"""Unit-step fGn autocovariance at the lags :math:`0, 1, \dots, n` (``n`` static), :math:`a = 2H`.

    For a batch of exponents pass ``a`` of shape ``S + (1,)``: the result is ``S + (n + 1,)``.

    The same values as :func:`unit_autocovariance`, cheaper: only the first 16 lags take the direct
    formula, the rest only the series (two transcendental functions per lag, not eight).
    """
    a = jnp.asarray(a)
    head = min(n + 1, int(_SERIES_FROM))
    k = jnp.arange(head, dtype=a.dtype)
    direct = 0.5 * (_abs_pow(k + 1, a) - 2 * _abs_pow(k, a) + _abs_pow(k - 1, a))
    if head == n + 1:
        return direct
    k = jnp.arange(head, n + 1, dtype=a.dtype)
    far = jnp.exp(a * jnp.log(k)) * _binomial_series(1.0 / (k * k), a)
    return jnp.concatenate([direct, far], axis=-1)


def _binomial_series(y, a):
    r""":math:`\sum_{m=1}^{M} \binom{a}{2m} y^m` by Horner.

    The coefficients by :math:`\binom{a}{j+1} = \binom{a}{j}\frac{a-j}{j+1}`.
    """
    coeffs = []
    c = jnp.ones_like(a)
    for j in range(2 * _SERIES_TERMS):
        c = c * (a - j) * (1.0 / (j + 1))
        if j % 2 == 1:  # c is now binom(a, j + 1) with j + 1 even
            coeffs.append(c)
    # Materialise the M coefficients once: fused, XLA would redo the recurrence for every lag.
    coeffs = jax.lax.optimization_barrier(jnp.stack(coeffs))
    acc = jnp.zeros_like(y * a)
    for m in reversed(range(_SERIES_TERMS)):
        acc = (acc + coeffs[m]) * y
    return acc


def _as_float(*xs):
    """Arrays in their common floating dtype (at least float32; Python scalars take the default)."""
    dtype = jnp.promote_types(jnp.result_type(float, *xs), jnp.float32)
    return tuple(jnp.asarray(x, dtype) for x in xs)
