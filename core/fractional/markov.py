r"""Markov-approximate fractional Brownian motion (MA-fBM): a weighted sum of Ornstein-Uhlenbeck processes.

Daems, Opper, Crevecoeur & Birdal, "Variational Inference for SDEs Driven by Fractional Noise"
(ICLR 2024), section 3; the representation of fBM as an integral over OU processes is from
Harms & Stefanovits, "Affine representations of fractional processes with applications in
mathematical finance" (2019).

**The approximation.** :math:`K` Ornstein-Uhlenbeck processes, all driven by *one* Brownian motion,

.. math::
    dY^k_t = -\gamma_k Y^k_t\,dt + dW_t, \qquad k = 1, \dots, K,

with geometric speeds :math:`\gamma_k = r^{k - (K+1)/2}` (:func:`speeds`), and the weighted sum

.. math::
    \text{type II:}\quad \hat B^H_t = \sum_k \omega_k Y^k_t \ \ (Y^k_0 = 0), \qquad
    \text{type I:}\quad \hat B^H_t = \sum_k \omega_k (Y^k_t - Y^k_0) \ \ (Y_0 \text{ stationary}).

The pair :math:`(\hat B, Y)` is Markov, so an SDE driven by :math:`\hat B` is an ordinary SDE in
:math:`K + d` dimensions (:mod:`solverlab.fractional.fsde`).

**The two fBMs.** With :math:`a = H + 1/2`,

.. math::
    \text{II (Riemann-Liouville):}\ B_t = \frac{1}{\Gamma(a)} \int_0^t (t-s)^{H-1/2}\,dW_s, \qquad
    \text{I (Mandelbrot-van Ness):}\ B_t = c_H \int_{-\infty}^t
        \big[(t-s)^{H-1/2} - (-s)_+^{H-1/2}\big]\,dW_s,

with :math:`c_H = \sqrt{\Gamma(2H+1)\sin(\pi H)}/\Gamma(a)`, so that type I is the *standard* fBM,
:math:`\operatorname{Var} B_t = t^{2H}` (the law of :func:`solverlab.fractional.exact.fbm`), while
type II has :math:`\operatorname{Var} B_t = t^{2H} / (2H\,\Gamma(a)^2)` and no stationary increments.

**Optimal weights.** :math:`\omega^*` minimises :math:`\mathcal E(\omega) = \int_0^T
\mathbb E[(B_t - \hat B_t)^2]\,dt = \omega^\top A\omega - 2 b^\top\omega + c`, a quadratic, so
:math:`\omega^* = A^{-1} b` (Daems et al., Prop. 5, type II). With :math:`x = \gamma T` and
:math:`\varphi_2(x) = (x - 1 + e^{-x})/x^2`:

.. math::
    A^{II}_{ij} &= T^2 \varphi_2\big((\gamma_i + \gamma_j) T\big), \qquad
    b^{II}_k = T\gamma_k^{-a} P(a, \gamma_k T) - a\,\gamma_k^{-a-1} P(a+1, \gamma_k T), \qquad
    c^{II} = \frac{T^{2H+1}}{2H(2H+1)\Gamma(a)^2}, \\
    A^{I}_{ij} &= T^2\,\frac{x_i \varphi_2(x_i) + x_j\varphi_2(x_j)}{x_i + x_j}, \qquad
    b^{I}_k = c_H \Gamma(a)\,\gamma_k^{-a-1}\Big[2x_k + e^{-x_k} - e^{x_k}Q(a, x_k)
        - \frac{x_k^a}{\Gamma(a+1)}\Big], \qquad c^{I} = \frac{T^{2H+1}}{2H+1},

where :math:`P, Q` are the regularised lower and upper incomplete gamma functions. The type I
terms are derived in :func:`objective_terms` (they are not in the paper).

**Conditioning.** :math:`A` is a Gram matrix of nearly parallel exponentials: its condition number
is :math:`10^{7}` at :math:`K = 5` and :math:`10^{15}` to :math:`10^{17}` at :math:`K = 10 .. 20`
(Jacobi scaling does not help: the ill-conditioning is in the basis, not in the scales). The weights
beyond :math:`K \approx 6` are then ill-determined (many weight vectors give nearly the same error
and kernel); the error is not. We solve the Jacobi-scaled system by Cholesky with a tiny ridge (a
Tikhonov filter in the directions float arithmetic cannot resolve anyway), which keeps the weights
bounded and smooth in every parameter. Use float64 (``solverlab.setup(x64=True)``) for
:math:`K > 3`; see :func:`approximation_error` for the measured accuracy.

**Sizes** (relative error :math:`\mathcal E/c`, :math:`T = 1`, float64). At
:math:`\gamma_{\max} = 20`, :math:`K = 20`: type II 0.19, 4.3e-3, 6e-16, 3.6e-5, 1.2e-5 for
:math:`H = 0.1, 0.3, 0.5, 0.7, 0.9`; type I 0.25, 9.3e-3, 4.5e-3, 5.1e-2, 0.41. Type I needs a wider
range of speeds (its stationary past has long memory): at :math:`\gamma_{\max} = 10^4`, 8.6e-2,
3.5e-4, 2.1e-5, 2.0e-3, 0.14. Rough noise (:math:`H = 0.1`) is hard for both kinds.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammaln

from ..brownian import LEVY_AREAS
from ..errors import check_range, concrete_value
from .covariance import check_hurst

__all__ = [
    "KINDS",
    "speeds",
    "active_mask",
    "objective_terms",
    "optimal_weights",
    "approximation_error",
    "mvn_constant",
    "fbm_kernel",
    "ma_kernel",
    "exact_variance",
    "ma_variance",
    "ma_covariance",
    "stationary_covariance",
    "sample_stationary",
    "ou_increment_coefficients",
    "ma_fbm_path",
    "ma_fbm_from_increments",
    "check_kind",
    "check_K",
]

#: The two fractional Brownian motions: ``"I"`` Mandelbrot-van Ness (standard fBM), ``"II"``
#: Riemann-Liouville (the paper's choice).
KINDS = ("I", "II")


# ----------------------------------------------------------------------------------------------
# Validation (at the Python boundary, before tracing)


def check_kind(kind) -> None:
    """Raise ``ValueError`` unless ``kind`` is ``"I"`` or ``"II"``."""
    if not isinstance(kind, str) or kind not in KINDS:
        raise ValueError(
            f"kind must be one of 'I' (Mandelbrot-van Ness), 'II' (Riemann-Liouville), got {kind!r}"
        )


def check_K(K) -> int:
    """``K`` as a Python int; ``ValueError`` unless it is an integer >= 1 (it is a shape: static)."""
    if isinstance(K, bool) or not isinstance(K, (int, np.integer)):
        if concrete_value(K) is None:
            raise ValueError("K must be a concrete integer >= 1 (it sets an array shape), got a traced value")
        arr = np.asarray(K)
        if arr.shape != () or not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"K must be an integer >= 1, got {K!r}")
        K = int(arr)
    if K < 1:
        raise ValueError(f"K must lie in [1, inf), got {K}")
    return int(K)


def _check_slot_K(K, slots) -> int:
    """``slots`` as an int; a concrete ``K`` must be an integer in ``[1, slots]`` (a traced one passes)."""
    slots = check_K(slots)
    check_range("K", K, low=1.0, high=float(slots))
    arr = concrete_value(K)
    if arr is not None and np.any(arr != np.round(arr)):
        raise ValueError(f"K must be an integer in [1, {slots}], got {K!r}")
    return slots


def _check_gammas(gammas) -> None:
    check_range("gammas", gammas, low=0.0, low_open=True)
    arr = concrete_value(gammas)
    if arr is not None and (arr.ndim != 1 or arr.size == 0):
        raise ValueError(f"gammas must be a 1-d array of K >= 1 speeds, got shape {arr.shape}")


def _check_common(hurst, gammas, T, kind) -> None:
    check_hurst(hurst)
    _check_gammas(gammas)
    check_range("T", T, low=0.0, low_open=True)
    check_kind(kind)


# ----------------------------------------------------------------------------------------------
# Speeds


def speeds(K: int, gamma_max, *, slots: int | None = None) -> jax.Array:
    r"""Geometric mean-reversion speeds :math:`\gamma_k = r^{k - (K+1)/2}`, :math:`k = 1..K`.

    Daems et al. (2024), section 3: the speeds are symmetric about 1 on a log scale,
    :math:`\gamma_1 = 1/\gamma_{\max}`, :math:`\gamma_K = \gamma_{\max}`, with
    :math:`r = \gamma_{\max}^{2/(K-1)}`; ``K = 1`` gives ``[1.]``.

    Args:
        K: number of OU processes, an integer >= 1 (static: it is a shape), unless ``slots`` is given.
        gamma_max: largest speed, > 0 (traced: a new value never recompiles). Values below 1 give
            reversed (descending) speeds.
        slots: optional fixed length. Then ``K`` may be traced (``1 <= K <= slots``): the first ``K``
            entries are the speeds above and the rest are 1 (harmless placeholders); pair the result
            with :func:`active_mask` so a dashboard's K slider never recompiles.

    Returns:
        ``(K,)`` array (``(slots,)`` with ``slots``), in the default float dtype.
    """
    check_range("gamma_max", gamma_max, low=0.0, low_open=True)
    if slots is None:
        K = check_K(K)
        return _speeds(K, gamma_max, K)
    slots = _check_slot_K(K, slots)
    return _speeds(K, gamma_max, slots)


@functools.partial(jax.jit, static_argnums=2)
def _speeds(K, gamma_max, n: int):
    dtype = jnp.result_type(float)
    k_count = jnp.asarray(K, dtype)
    k = jnp.arange(1, n + 1, dtype=dtype)
    # gamma_k = gamma_max ** ((2k - K - 1) / (K - 1)); K = 1 (0/0) gives exponent 0, i.e. 1.
    denom = jnp.maximum(k_count - 1.0, 1.0)
    expo = jnp.where(k_count > 1, (2.0 * k - k_count - 1.0) / denom, 0.0)
    gam = jnp.asarray(gamma_max, dtype) ** expo
    return jnp.where(k <= k_count, gam, jnp.ones_like(gam))


def active_mask(K, slots: int) -> jax.Array:
    """Boolean mask ``(slots,)``: the first ``K`` slots active (``K`` may be traced)."""
    slots = _check_slot_K(K, slots)
    return jnp.arange(slots) < K


# ----------------------------------------------------------------------------------------------
# Stable special functions


def _phi1(x):
    r""":math:`\varphi_1(x) = (1 - e^{-x})/x`, accurate for small ``x`` (via ``expm1``)."""
    safe = jnp.where(x == 0, 1.0, x)
    return jnp.where(x == 0, 1.0, -jnp.expm1(-safe) / safe)


def _horner(coef, x, n_terms: int, init=None):
    r""":math:`\sum_{n<N} \prod_{m\le n} \ldots` by a backward loop ``acc <- coef(n, acc)``, ``n = N-1..0``.

    A ``fori_loop`` rather than an unrolled Python loop: the series below have 16 to 60 terms, and
    unrolled (and differentiated) they made compiling take seconds.
    """
    acc = jnp.zeros_like(x) if init is None else init

    def body(i, acc):
        return coef(n_terms - 1 - i, acc)

    return jax.lax.fori_loop(0, n_terms, body, acc)


def _phi2(x):
    r""":math:`\varphi_2(x) = (x - 1 + e^{-x})/x^2`, accurate for every ``x >= 0``.

    Why: for small ``x`` the numerator cancels to :math:`x^2/2`; the Taylor series
    :math:`\sum_n (-x)^n/(n+2)!` (16 terms: error below :math:`10^{-18}` for :math:`x < 1/2`)
    replaces it there.
    """
    small = x < 0.5
    xs = jnp.where(small, x, 0.0)
    # sum_n (-x)^n/(n+2)! = [1 - x/3 (1 - x/4 (1 - ...))] / 2.
    series = _horner(lambda n, acc: 1.0 - xs / (n + 3.0) * acc, xs, 16) / 2.0
    xl = jnp.where(small, 1.0, x)
    direct = (xl - 1.0 + jnp.exp(-xl)) / (xl * xl)
    return jnp.where(small, series, direct)


_SERIES_BELOW = 2.0  # incomplete-gamma quantities: power series below, continued fraction above
_SERIES_TERMS = 36   # 2^36/36! ~ 2e-31: float64 precision for x < 2
_CF_DEPTH = 60       # Legendre's fraction: below 1e-14 for x >= 2, a <= 2.5 (checked against scipy)


def _scaled_upper_gamma(a, x):
    r""":math:`S(a, x) = e^{x} Q(a, x) = e^x\Gamma(a, x)/\Gamma(a)` for :math:`x \ge 2`, without overflow.

    Legendre's continued fraction :math:`e^x\Gamma(a,x) = x^a \big/ \big(x + 1 - a -
    \frac{1(1-a)}{x + 3 - a - \frac{2(2-a)}{x + 5 - a - \cdots}}\big)`, evaluated bottom-up at a
    fixed depth; plain arithmetic, so differentiable in ``a``. (``jax.scipy.special.gammaincc`` would
    overflow through :math:`e^x` and its derivative in ``a`` compiles slowly.)
    """
    def level(n, tail):  # n = 0 .. depth-1 stands for the level n + 1
        k = n + 1.0
        return k * (k - a) / (x + 2.0 * k + 1.0 - a - tail)

    tail = _horner(level, x, _CF_DEPTH, jnp.zeros_like(x + a))
    return jnp.exp(a * jnp.log(x) - gammaln(a)) / (x + 1.0 - a - tail)


def _rl_profile(a, x):
    r""":math:`F(a, x) = \frac{1}{\Gamma(a)}\int_0^1 (1 - v)v^{a-1}e^{-xv}dv`
    :math:`= x^{-a}P(a, x) - a x^{-a-1}P(a+1, x)`.

    The type II right-hand side is :math:`b_k = T^{a+1}F(a, \gamma_k T)`. Small ``x``: the series
    :math:`\sum_n \frac{(-x)^n}{n!\,(a+n)(a+n+1)\Gamma(a)}`; large ``x``: with
    :math:`P(a+1, x) = P(a, x) - x^ae^{-x}/\Gamma(a+1)`,
    :math:`F = x^{-a}P(a,x)(1 - a/x) + e^{-x}/(x\Gamma(a))`, :math:`P = 1 - e^{-x}S(a, x)`.
    """
    small = x < _SERIES_BELOW
    xs = jnp.where(small, x, 1.0)
    series = _horner(lambda n, acc: 1.0 / ((a + n) * (a + n + 1.0)) - xs / (n + 1.0) * acc,
                     xs, _SERIES_TERMS, jnp.zeros_like(xs + a))
    series = series * jnp.exp(-gammaln(a))
    xl = jnp.where(small, _SERIES_BELOW, x)
    p = -jnp.expm1(-xl + jnp.log(_scaled_upper_gamma(a, xl)))  # 1 - e^{-x} S
    large = jnp.exp(-a * jnp.log(xl)) * p * (1.0 - a / xl) + jnp.exp(-xl - gammaln(a)) / xl
    return jnp.where(small, series, large)


def mvn_constant(hurst):
    r""":math:`c_H = \sqrt{\Gamma(2H+1)\sin(\pi H)}/\Gamma(H+1/2)`: makes the type I kernel standard.

    With it :math:`c_H^2\big(\int_0^\infty ((1+s)^{H-1/2} - s^{H-1/2})^2 ds + \tfrac1{2H}\big) = 1`
    (Mandelbrot & van Ness 1968), i.e. :math:`\operatorname{Var} B_1 = 1`.
    """
    h = jnp.asarray(hurst, jnp.result_type(float))
    return jnp.exp(0.5 * (gammaln(2 * h + 1) + jnp.log(jnp.sin(jnp.pi * h))) - gammaln(h + 0.5))


# ----------------------------------------------------------------------------------------------
# The quadratic objective


def _terms(hurst, gammas, T, kind):
    """``(A, b, c)`` in the default float dtype; no validation (callers check)."""
    dtype = jnp.result_type(float)
    h = jnp.asarray(hurst, dtype)
    g = jnp.asarray(gammas, dtype)
    T = jnp.asarray(T, dtype)
    a = h + 0.5
    x = g * T
    if kind == "II":
        A = T * T * _phi2(x[:, None] + x[None, :])
        # b_k = T^{a+1} [x^{-a} P(a, x) - a x^{-a-1} P(a+1, x)]: the T-scaling made explicit.
        b = T ** (a + 1) * _rl_profile(a, x)
        c = T ** (2 * h + 1) / (2 * h * (2 * h + 1)) * jnp.exp(-2 * gammaln(a))
    else:
        xp = x * _phi2(x)  # = 1 - phi1(x), no cancellation for small x
        A = T * T * (xp[:, None] + xp[None, :]) / (x[:, None] + x[None, :])
        b = (mvn_constant(h) * T ** (a + 1)) * _mvn_bracket(a, x)
        c = T ** (2 * h + 1) / (2 * h + 1)
    return A, b, c


def _mvn_bracket(a, x):
    r""":math:`\Gamma(a)\,x^{-a-1}\big[2x + e^{-x} - e^{x}Q(a,x) - x^a/\Gamma(a+1)\big]`, stable.

    Why two forms: for small ``x`` the bracket's O(x) terms cancel. There we use
    :math:`e^xP(a,x) - x^a/\Gamma(a+1) = x^a\sum_{n\ge1} x^n/\Gamma(a+n+1)` and
    :math:`e^{-x} - e^{x} + 2x = -2(\sinh x - x)`, both series without cancellation:

    .. math::
        \text{bracket} = x^{a+1}\sum_{n\ge0}\frac{x^n}{\Gamma(a+n+2)} - 2\sum_{m\ge1}\frac{x^{2m+1}}{(2m+1)!};

    for large ``x`` the bracket itself with :math:`e^xQ` from :func:`_scaled_upper_gamma`.
    """
    small = x < _SERIES_BELOW
    xs = jnp.where(small, x, 1.0)
    # Gamma(a) sum_n x^n / Gamma(a+n+2) = [1 + x/(a+2) (1 + x/(a+3) (1 + ...))] / (a (a+1)).
    s1 = _horner(lambda n, acc: 1.0 + xs / (a + n + 2.0) * acc, xs, _SERIES_TERMS,
                 jnp.zeros_like(xs + a)) / (a * (a + 1.0))
    # (sinh x - x) / x^3 = sum_m x^(2m) / (2m+3)! = [1 + x^2/(4*5) (1 + x^2/(6*7) (1 + ...))] / 3!.
    sh = _horner(lambda m, acc: 1.0 + xs * xs / ((2.0 * m + 4.0) * (2.0 * m + 5.0)) * acc, xs, 16) / 6.0
    log_gamma_a = gammaln(a)
    # x^3 * x^{-a-1} = x^{2-a}: combined in the exponent so tiny x neither overflows nor underflows.
    series = s1 - 2.0 * jnp.exp(log_gamma_a + (2.0 - a) * jnp.log(xs)) * sh
    xl = jnp.where(small, _SERIES_BELOW, x)
    bracket = 2 * xl + jnp.exp(-xl) - _scaled_upper_gamma(a, xl) - jnp.exp(a * jnp.log(xl) - gammaln(a + 1))
    direct = jnp.exp(log_gamma_a - (a + 1) * jnp.log(xl)) * bracket
    return jnp.where(small, series, direct)


def objective_terms(hurst, gammas, T=1.0, kind: str = "II"):
    r"""The quadratic objective :math:`\mathcal E(\omega) = \omega^\top A\omega - 2b^\top\omega + c`.

    :math:`\mathcal E(\omega) = \int_0^T \mathbb E[(B^H_t - \hat B_t)^2]\,dt` for the fBM of ``kind``
    (formulas in the module docstring; type II from Daems et al. 2024, Prop. 5).

    **Type I derivation.** With stationary OU processes :math:`Y^k_t = \int_{-\infty}^t
    e^{-\gamma_k(t-s)}dW_s`, :math:`\mathbb E[Y^i_t Y^j_s] = e^{-\gamma_i(t-s)}/(\gamma_i+\gamma_j)`
    for :math:`t \ge s`, so :math:`\mathbb E[(Y^i_t - Y^i_0)(Y^j_t - Y^j_0)] = (2 - e^{-\gamma_i t}
    - e^{-\gamma_j t})/(\gamma_i + \gamma_j)`; integrating over :math:`[0, T]` gives :math:`A^I`.
    With the kernel :math:`k(u) = c_H u^{a-1}` and :math:`\int_0^\infty k(u)e^{-\gamma u}du =
    c_H\Gamma(a)\gamma^{-a}`,

    .. math::
        \mathbb E[B_t Y_t] = c_H\Gamma(a)\gamma^{-a}(1 - e^{-\gamma t}), \qquad
        \mathbb E[B_t Y_0] = c_H\Gamma(a)\gamma^{-a}\big(e^{\gamma t}Q(a, \gamma t) - 1\big),

    and :math:`\int_0^x e^y Q(a, y)\,dy = e^x Q(a, x) - 1 + x^a/\Gamma(a+1)` (by parts) gives
    :math:`b^I`. Finally :math:`c^I = \int_0^T t^{2H}dt`.

    Args:
        hurst: Hurst index in (0, 1), scalar (traced).
        gammas: speeds ``(K,)``, positive.
        T: horizon > 0 (traced).
        kind: ``"II"`` (Riemann-Liouville) or ``"I"`` (Mandelbrot-van Ness, standard fBM); static.

    Returns:
        ``(A, b, c)`` of shapes ``(K, K)``, ``(K,)``, ``()``.
    """
    _check_common(hurst, gammas, T, kind)
    return _terms_jit(hurst, gammas, T, kind)


# Relative ridges on the unit-diagonal (Jacobi-scaled) matrix, in units of the machine epsilon. The
# first trades a little accuracy (the error grows by a few percent at K = 20) for reproducibility:
# with 10 eps, rounding noise amplified by 1/sqrt(delta) reached 1e-3 of the error at K = 40; with
# 100 eps it stays below 1e-4 up to K = 20 (measured: masked vs unmasked solves). The second is
# the fallback when rounding makes the first Cholesky fail (NaN): very many, very close speeds.
_RIDGES = (100.0, 1e6)


def _solve(A, b, active):
    """Ridge-filtered solve of ``A w = b`` on the active slots.

    Returns ``(w, ys, xs, delta)``: the weights, :math:`L^{-1}\tilde b` and the scaled solution
    :math:`\tilde x` (``w = d * xs``) and the ridge used.
    """
    K = b.shape[0]
    m = jnp.ones((K,), bool) if active is None else jnp.asarray(active, bool)
    mm = m[:, None] & m[None, :]
    # Inactive slots: identity rows/columns and zero right-hand side, so they decouple exactly.
    d = jnp.where(m, 1.0 / jnp.sqrt(jnp.where(m, jnp.diagonal(A), 1.0)), 0.0)
    eye = jnp.eye(K, dtype=A.dtype)
    As = jnp.where(mm, d[:, None] * A * d[None, :], eye)
    bs = d * b
    eps = float(jnp.finfo(A.dtype).eps)
    # Try the small ridge (no gradient needed for the test), then factor once with the ridge that
    # works: a single differentiable Cholesky, so no NaN from an unused branch reaches a gradient.
    trial = jnp.linalg.cholesky(jax.lax.stop_gradient(As) + (_RIDGES[0] * eps) * eye)
    ok = jnp.all(jnp.isfinite(trial))
    delta = jnp.where(ok, _RIDGES[0] * eps, _RIDGES[1] * eps).astype(A.dtype)
    L = jnp.linalg.cholesky(As + delta * eye)
    ys = jax.scipy.linalg.solve_triangular(L, bs, lower=True)
    xs = jax.scipy.linalg.solve_triangular(L.T, ys, lower=False)
    return d * xs, ys, xs, delta


def optimal_weights(hurst, gammas, T=1.0, kind: str = "II", active=None) -> jax.Array:
    r"""Optimal weights :math:`\omega^* = A^{-1}b` of the MA-fBM (Daems et al. 2024, Prop. 5).

    :math:`\omega^*` minimises :math:`\int_0^T \mathbb E[(B^H_t - \sum_k \omega_k Y^k_t)^2]\,dt`
    (type I: :math:`Y^k_t - Y^k_0`); see :func:`objective_terms`. Solved as
    :math:`D\,(DAD + \delta I)^{-1} D b` with :math:`D = \operatorname{diag}(A)^{-1/2}` by
    Cholesky, :math:`\delta = 100\,\varepsilon_{\text{mach}}` (:math:`10^6\varepsilon` if that
    Cholesky fails to rounding): the ridge only filters directions whose eigenvalue float
    arithmetic cannot resolve, so the error stays near its optimum while the weights stay bounded
    (in float64 the ridge costs a few percent of the error at :math:`K = 20`). Beyond
    :math:`K \approx 6` the weights are not unique: rounding (e.g. masked versus unmasked slots)
    moves them along nearly null directions of :math:`A`, changing the kernel
    :math:`\sum_k\omega_ke^{-\gamma_k u}` by about :math:`10^{-4}` and the error by about
    :math:`10^{-4}` of itself.

    ``hurst``, ``gammas``, ``T`` and ``active`` are traced (jit-able; a new value never
    recompiles); differentiable in ``hurst`` (``jax.grad``): :math:`A` does not depend on
    :math:`H`, so :math:`\partial\omega^*/\partial H = A^{-1}\partial b/\partial H`.

    Args:
        hurst: scalar in (0, 1).
        gammas: ``(K,)`` positive speeds, e.g. :func:`speeds`.
        T: horizon > 0 over which the mean squared error is integrated.
        kind: ``"II"`` or ``"I"`` (static).
        active: optional boolean ``(K,)`` mask; inactive slots get weight 0 and are left out of
            the system, so the active weights equal those for the active speeds alone.

    Returns:
        ``(K,)`` weights.
    """
    _check_common(hurst, gammas, T, kind)
    return _optimum(hurst, gammas, T, active, kind)[0]


def approximation_error(hurst, gammas, weights=None, T=1.0, kind: str = "II", active=None) -> jax.Array:
    r"""Mean squared error :math:`\int_0^T \mathbb E[(B^H_t - \hat B_t)^2]\,dt` of the MA-fBM.

    :math:`\omega^\top A\omega - 2b^\top\omega + c` (Daems et al. 2024, Prop. 5); with
    ``weights=None`` the optimal (ridge-filtered) weights, for which it is
    :math:`c - \|L^{-1}\tilde b\|^2 - \delta\|\tilde x\|^2` (:math:`LL^\top = DAD + \delta I`): a
    sum of squares subtracted from :math:`c`, so it is the true error of the returned weights, and
    clipped at 0 where the subtraction cancels.

    Accuracy (measured at :math:`\gamma_{\max} = 20`, :math:`H \in [0.1, 0.9]`): float64 resolves
    errors down to about :math:`10^{-15}c` and is reproducible to about :math:`10^{-4}` relative at
    :math:`K \ge 9`. float32 matches float64 to :math:`2\cdot10^{-5}c` for :math:`K \le 3`; beyond,
    it resolves fewer directions of :math:`A` and its optimum stops improving: at :math:`K = 20`
    its error is 1.1 to 3 times the float64 one (e.g. :math:`H = 0.7`: 8.0e-5 vs 3.6e-5 relative),
    and for :math:`H = 1/2` it floors at about :math:`10^{-7}c` instead of :math:`10^{-15}c`.

    Args:
        hurst, gammas, T, kind, active: as in :func:`optimal_weights`.
        weights: ``(K,)`` weights, or ``None`` for the optimal ones. With ``active``, inactive
            slots are ignored (treated as weight 0).

    Returns:
        Scalar, >= 0.
    """
    _check_common(hurst, gammas, T, kind)
    if weights is None:
        return _optimum(hurst, gammas, T, active, kind)[1]
    return _error_of(hurst, gammas, weights, T, active, kind)


# The kernels behind the public functions, compiled once per kind (and shapes): the type I terms
# unroll series and a continued fraction, far too many small operations to run op by op.
_terms_jit = jax.jit(_terms, static_argnames="kind")


@functools.partial(jax.jit, static_argnames="kind")
def _optimum(hurst, gammas, T, active, kind):
    """Optimal weights and their error ``c - |L^{-1} b|^2 - delta |x|^2`` (clipped at 0)."""
    A, b, c = _terms(hurst, gammas, T, kind)
    # b'x = |L^{-1} b|^2: a sum of squares, so only the final subtraction from c cancels.
    w, ys, xs, delta = _solve(A, b, active)
    return w, jnp.maximum(c - jnp.dot(ys, ys) - delta * jnp.dot(xs, xs), 0.0)


@functools.partial(jax.jit, static_argnames="kind")
def _error_of(hurst, gammas, weights, T, active, kind):
    A, b, c = _terms(hurst, gammas, T, kind)
    w = jnp.asarray(weights, A.dtype)
    if active is not None:
        w = jnp.where(jnp.asarray(active, bool), w, 0.0)
    return jnp.maximum(jnp.dot(w, A @ w) - 2.0 * jnp.dot(b, w) + c, 0.0)


# ----------------------------------------------------------------------------------------------
# Kernels, variances and covariances in closed form


def _masked_weights(hurst, gammas, weights, T, kind, active):
    """The weights to use: given (masked) or optimal."""
    if weights is None:
        return _optimum(hurst, gammas, T, active, kind)[0]
    w = jnp.asarray(weights, jnp.result_type(float))
    if active is not None:
        w = jnp.where(jnp.asarray(active, bool), w, 0.0)
    return w


def fbm_kernel(u, hurst, kind: str = "II") -> jax.Array:
    r"""The fBM's Volterra kernel :math:`k(u)` for :math:`u > 0` (0 for :math:`u \le 0`).

    Type II: :math:`k(u) = u^{H-1/2}/\Gamma(H+1/2)`, so :math:`B_t = \int_0^t k(t-s)dW_s`; type I:
    :math:`k(u) = c_H u^{H-1/2}` (:func:`mvn_constant`), so :math:`B_t = \int_{-\infty}^t
    [k(t-s) - k(-s)]dW_s` is the standard fBM. ``u`` any shape; the MA-fBM approximates this by
    :func:`ma_kernel` (Daems et al. 2024, eq. 5).
    """
    check_hurst(hurst)
    check_kind(kind)
    return _fbm_kernel(u, hurst, kind)


@functools.partial(jax.jit, static_argnames="kind")
def _fbm_kernel(u, hurst, kind):
    dtype = jnp.result_type(float)
    u = jnp.asarray(u, dtype)
    h = jnp.asarray(hurst, dtype)
    pos = u > 0
    up = jnp.where(pos, u, 1.0)
    scale = jnp.exp(-gammaln(h + 0.5)) if kind == "II" else mvn_constant(h)
    return jnp.where(pos, scale * up ** (h - 0.5), 0.0)


def ma_kernel(u, gammas, weights) -> jax.Array:
    r"""The MA-fBM kernel :math:`\hat k(u) = \sum_k \omega_k e^{-\gamma_k u}` for :math:`u \ge 0`.

    ``u`` any shape; ``gammas``, ``weights`` ``(K,)``. Returns ``u.shape``.
    """
    _check_gammas(gammas)
    return _ma_kernel(u, gammas, weights)


@jax.jit
def _ma_kernel(u, gammas, weights):
    dtype = jnp.result_type(float)
    u = jnp.asarray(u, dtype)
    g = jnp.asarray(gammas, dtype)
    w = jnp.asarray(weights, dtype)
    return jnp.sum(w * jnp.exp(-g * jnp.maximum(u, 0.0)[..., None]), axis=-1)


def exact_variance(t, hurst, kind: str = "II") -> jax.Array:
    r""":math:`\operatorname{Var} B^H_t`: :math:`t^{2H}` (type I), :math:`t^{2H}/(2H\,\Gamma(H+1/2)^2)` (II).

    ``t >= 0`` any shape; ``hurst`` traced.
    """
    check_hurst(hurst)
    check_kind(kind)
    check_range("t", t, low=0.0)
    return _exact_variance(t, hurst, kind)


@functools.partial(jax.jit, static_argnames="kind")
def _exact_variance(t, hurst, kind):
    dtype = jnp.result_type(float)
    t = jnp.asarray(t, dtype)
    h = jnp.asarray(hurst, dtype)
    v = jnp.where(t > 0, jnp.where(t > 0, t, 1.0) ** (2 * h), 0.0)
    if kind == "II":
        v = v / (2 * h) * jnp.exp(-2 * gammaln(h + 0.5))
    return v


def ma_covariance(s, t, hurst, gammas, weights=None, kind: str = "II", T=1.0, active=None) -> jax.Array:
    r""":math:`\operatorname{Cov}(\hat B_s, \hat B_t)` of the MA-fBM in closed form (``s``, ``t`` broadcast).

    For :math:`s \le t`, with :math:`g_{ij} = \gamma_i + \gamma_j`:

    .. math::
        \text{II:}\ \sum_{ij}\omega_i\omega_j\, e^{-\gamma_i(t-s)}\,\frac{1 - e^{-g_{ij}s}}{g_{ij}},
        \qquad
        \text{I:}\ \sum_{ij}\omega_i\omega_j\,
            \frac{1 + e^{-\gamma_i (t-s)} - e^{-\gamma_i t} - e^{-\gamma_j s}}{g_{ij}} .

    (Type I from the stationary covariance :math:`\mathbb E[Y^i_t Y^j_s] = e^{-\gamma_i(t-s)}/g_{ij}`.)
    ``weights=None``: the optimal weights for ``hurst`` on ``[0, T]``.
    """
    _check_common(hurst, gammas, T, kind)
    check_range("s", s, low=0.0)
    check_range("t", t, low=0.0)
    return _ma_covariance(s, t, hurst, gammas, weights, T, active, kind)


@functools.partial(jax.jit, static_argnames="kind")
def _ma_covariance(s, t, hurst, gammas, weights, T, active, kind):
    dtype = jnp.result_type(float)
    w = _masked_weights(hurst, gammas, weights, T, kind, active)
    g = jnp.asarray(gammas, dtype)
    s, t = jnp.broadcast_arrays(jnp.asarray(s, dtype), jnp.asarray(t, dtype))
    lo, hi = jnp.minimum(s, t)[..., None, None], jnp.maximum(s, t)[..., None, None]
    gi, gj = g[:, None], g[None, :]
    gij = gi + gj
    if kind == "II":
        terms = jnp.exp(-gi * (hi - lo)) * lo * _phi1(gij * lo)
    else:
        # (1 - e^{-g_j s}) + (1 - e^{-g_i t}) - (1 - e^{-g_i (t - s)}), each by expm1 (small speeds).
        terms = (jnp.expm1(-gi * (hi - lo)) - jnp.expm1(-gj * lo) - jnp.expm1(-gi * hi)) / gij
    return jnp.einsum("...ij,i,j->...", terms, w, w)


def ma_variance(t, hurst, gammas, weights=None, kind: str = "II", T=1.0, active=None) -> jax.Array:
    r""":math:`\operatorname{Var}\hat B_t` of the MA-fBM in closed form.

    .. math::
        \text{II:}\ \sum_{ij}\omega_i\omega_j\frac{1 - e^{-g_{ij}t}}{g_{ij}}, \qquad
        \text{I:}\ \sum_{ij}\omega_i\omega_j\frac{2 - e^{-\gamma_i t} - e^{-\gamma_j t}}{g_{ij}},
        \qquad g_{ij} = \gamma_i + \gamma_j .

    Args:
        t: times >= 0, any shape.
        hurst, gammas, T, kind, active: as in :func:`optimal_weights`.
        weights: ``(K,)`` or ``None`` for the optimal weights on ``[0, T]``.

    Returns:
        ``t.shape``.
    """
    check_range("t", t, low=0.0)
    return ma_covariance(t, t, hurst, gammas, weights, kind, T, active)


# ----------------------------------------------------------------------------------------------
# Paths on the Brownian tree


def stationary_covariance(gammas) -> jax.Array:
    r"""Covariance :math:`\Sigma_{ij} = 1/(\gamma_i + \gamma_j)` of the stationary OU processes."""
    _check_gammas(gammas)
    g = jnp.asarray(gammas, jnp.result_type(float))
    return 1.0 / (g[:, None] + g[None, :])


def sample_stationary(key, gammas, shape=()) -> jax.Array:
    r"""Draws of :math:`Y_0 \sim \mathcal N(0, \Sigma)`, :math:`\Sigma_{ij} = 1/(\gamma_i+\gamma_j)`.

    Shape ``shape + (K,)``.

    :math:`\Sigma` is a Cauchy matrix, as badly conditioned as :math:`A`, so its square root comes
    from ``eigh`` with negative rounding-level eigenvalues clipped to 0 (exact to rounding in law).
    """
    _check_gammas(gammas)
    return _sample_stationary(key, gammas, tuple(shape))


@functools.partial(jax.jit, static_argnums=2)
def _sample_stationary(key, gammas, shape):
    g = jnp.asarray(gammas, jnp.result_type(float))
    sigma = 1.0 / (g[:, None] + g[None, :])
    lam, U = jnp.linalg.eigh(sigma)
    root = U * jnp.sqrt(jnp.maximum(lam, 0.0))
    z = jax.random.normal(key, tuple(shape) + (sigma.shape[0],), sigma.dtype)
    return z @ root.T


# Ito representations over [t, t+h] with x = (u - t)/h: W = int 1 dW, H = int (1/2 - x) dW,
# K = int P2(x)/12 dW, P2 = 6x^2 - 6x + 1; variances h, h/12, h/720 (solverlab.brownian._increment).
_LEVY_VARS = (1.0, 1.0 / 12.0, 1.0 / 720.0)


def _poly_moments(n: int):
    """m_j(n) = int_0^1 y^n p_j(1 - y) dy for the three Legendre-type weights above."""
    return (
        1.0 / (n + 1),
        1.0 / (n + 2) - 0.5 / (n + 1),
        (6.0 / (n + 3) - 6.0 / (n + 2) + 1.0 / (n + 1)) / 12.0,
    )


def ou_increment_coefficients(gammas, h, levy_area="space-time"):
    r"""Exact-in-mean OU step given the Brownian increment and its Levy areas.

    Over :math:`[t, t+h]`, :math:`Y_{t+h} = e^{-\gamma h}Y_t + I` with :math:`I = \int_t^{t+h}
    e^{-\gamma(t+h-u)}dW_u`. :math:`W = \int dW`, :math:`H = \int(\tfrac12 - x)dW` and
    :math:`K = \int \tfrac1{12}P_2(x)dW` (:math:`x = (u-t)/h`) are independent Gaussians with
    variances :math:`h, h/12, h/720`, so the conditional mean is the projection

    .. math::
        \mathbb E[I \mid W, H, K] = c_W W + c_H H + c_K K, \qquad
        c_j = \frac{\int_0^1 e^{-z(1-x)}p_j(x)\,dx}{\int_0^1 p_j^2}, \quad z = \gamma h,

    i.e. :math:`c_W = (1 - e^{-z})/z`, :math:`c_H = 12\big(\tfrac12 - \varphi_2(z)(1 + z/2)\big)
    \approx -z`, :math:`c_K = 60(6J_2 - 6J_1 + J_0) \approx z^2` with
    :math:`J_n = \int_0^1 y^n e^{-zy}dy`. The conditional variance left over,

    .. math::
        \operatorname{Var}(I \mid W, H) = h\Big[\frac{1 - e^{-2z}}{2z} - c_W^2 - \frac{c_H^2}{12}\Big]
        = \frac{h z^4}{720} + O(h z^5),

    vanishes fast as :math:`h \to 0` (:math:`hz^2/12` with :math:`W` alone, :math:`O(hz^6)` with
    :math:`K` too). Small :math:`z` uses Taylor series (no cancellation), large :math:`z` the closed forms.

    Args:
        gammas: ``(K,)`` speeds.
        h: step lengths, any shape (>= 0).
        levy_area: ``None`` (W), ``"space-time"`` (W, H) or ``"space-time-time"`` (W, H, K).

    Returns:
        ``(decay, coefs, resid_var)``: ``decay`` :math:`e^{-\gamma h}` of shape ``h.shape + (K,)``,
        ``coefs`` of shape ``(d,) + h.shape + (K,)`` for the ``d`` components used, and the
        conditional variance ``h.shape + (K,)``.
    """
    if levy_area not in LEVY_AREAS:
        raise ValueError(f"levy_area must be one of None, 'space-time', 'space-time-time', got {levy_area!r}")
    _check_gammas(gammas)
    check_range("h", h, low=0.0)
    return _ou_coefficients(gammas, h, LEVY_AREAS[levy_area])


@functools.partial(jax.jit, static_argnums=2)
def _ou_coefficients(gammas, h, d: int):
    dtype = jnp.result_type(float)
    g = jnp.asarray(gammas, dtype)
    h = jnp.asarray(h, dtype)[..., None]
    z = g * h
    small = z < 2.0
    zs = jnp.where(small, z, 0.0)
    # Taylor: int_0^1 e^{-zy} p_j(1-y) dy = sum_n (-z)^n / n! m_j(n), by Horner with the factorial
    # folded in (acc <- m(n) + (-z)/(n+1) acc); 30 terms reach float64 precision for z < 2.
    series = [jnp.zeros_like(z) for _ in range(3)]
    for n in range(30, -1, -1):
        m = _poly_moments(n)
        for j in range(3):
            series[j] = series[j] * (-zs) / (n + 1) + m[j]
    zl = jnp.where(small, 1.0, z)
    e = jnp.exp(-zl)
    J0 = -jnp.expm1(-zl) / zl
    J1 = (1.0 - e * (1.0 + zl)) / zl**2
    J2 = (2.0 - e * (zl * zl + 2.0 * zl + 2.0)) / zl**3
    closed = (J0, J1 - 0.5 * J0, (6.0 * J2 - 6.0 * J1 + J0) / 12.0)
    proj = [jnp.where(small, series[j], closed[j]) for j in range(3)]
    coefs = jnp.stack([proj[j] / _LEVY_VARS[j] for j in range(d)])
    explained = sum(proj[j] ** 2 / _LEVY_VARS[j] for j in range(d))
    resid = h * jnp.maximum(_phi1(2.0 * z) - explained, 0.0)
    return jnp.exp(-z), coefs, resid


def _check_times(ts, tree) -> None:
    arr = concrete_value(ts)
    if arr is None:
        return
    if arr.ndim != 1 or arr.size < 1:
        raise ValueError(f"ts must be a non-empty 1-d array of times, got shape {arr.shape}")
    lo, hi = concrete_value(tree.t0), concrete_value(tree.t1)
    if lo is not None and hi is not None:
        check_range("ts", arr, low=float(lo), high=float(hi))
    if np.any(np.diff(arr) < 0):
        raise ValueError("ts must be sorted in increasing order")


def ma_fbm_path(tree, ts, hurst, gammas, weights=None, kind: str = "II", key=None, *, T=1.0,
                active=None, return_ou: bool = False):
    r"""The MA-fBM :math:`\hat B^H` at times ``ts``, driven by the Brownian path of ``tree``.

    Every OU process is stepped through the consecutive query intervals
    :math:`[t_{j-1}, t_j]` (:math:`t_{-1} = t_0` of the tree, where :math:`\hat B = 0`) by

    .. math::
        Y_{t_j} = e^{-\gamma h_j}Y_{t_{j-1}} + c_W W_j + c_H H_j\ (+\ c_K K_j),

    the conditional mean of the exact OU step given the tree's increment and Levy areas
    (:func:`ou_increment_coefficients`): exact in mean, with a conditional variance
    :math:`h z^4/720` (:math:`z = \gamma h`) left out per step. So the path is a deterministic function
    of the one Brownian path: the same tree queried on a fine grid and on a sub-grid gives values
    that agree up to :math:`O(\gamma^2 h^2)`, and both converge to the exact MA-fBM as the steps
    shrink. Then :math:`\hat B = \sum_k \omega_k Y^k` (type II, :math:`Y_{t_0} = 0`) or
    :math:`\sum_k \omega_k (Y^k - Y^k_{t_0})` (type I, :math:`Y_{t_0}` stationary, drawn from ``key``).
    Daems et al. (2024), section 3; the tree: Jelincic, Foster & Kidger (2024).

    Args:
        tree: a :class:`~solverlab.brownian.BrownianTree` (any ``levy_area``; ``"space-time"``
            recommended), of shape ``S``; its ``tol`` should be at most the smallest step.
        ts: sorted 1-d times in ``[tree.t0, tree.t1]``, shape ``(n,)``.
        hurst, gammas, weights, kind, T, active: as in :func:`ma_variance` (``weights=None``: the
            optimal weights on ``[0, T]``).
        key: ``jax.random`` key for the stationary start (type I only; required there).
        return_ou: also return the OU states ``(n,) + S + (K,)``.

    Returns:
        ``(n,) + S`` values of :math:`\hat B` (and the OU states with ``return_ou``).
    """
    _check_common(hurst, gammas, T, kind)
    _check_times(ts, tree)
    if kind == "I" and key is None:
        raise ValueError("key must be a jax.random key for kind='I' (the stationary start), got None")
    out = _ma_fbm_path(tree, ts, hurst, gammas, weights, key, T, active, kind)
    return out if return_ou else out[0]


def ma_fbm_from_increments(inc, h, hurst, gammas, weights=None, kind: str = "II", key=None, *, T=1.0,
                           active=None, return_ou: bool = False):
    r"""The MA-fBM after each of ``n`` consecutive steps, from their Brownian increments.

    The stepping of :func:`ma_fbm_path` on given increments, e.g. those of a tree over a grid
    (computed once and shared by several MA-fBMs) or of a :class:`~solverlab.brownian.BrownianGrid`.

    Args:
        inc: :class:`~solverlab.brownian.BrownianIncrement`, fields of shape ``(n,) + S``; the Levy
            areas it carries (``H``, ``K``) are used.
        h: step lengths ``(n,)``, >= 0.
        hurst, gammas, weights, kind, key, T, active, return_ou: as in :func:`ma_fbm_path`.

    Returns:
        ``(n,) + S`` values of :math:`\hat B` at the ends of the steps (and the OU states).
    """
    _check_common(hurst, gammas, T, kind)
    check_range("h", h, low=0.0)
    if kind == "I" and key is None:
        raise ValueError("key must be a jax.random key for kind='I' (the stationary start), got None")
    out = _ma_fbm_steps(inc, h, hurst, gammas, weights, key, T, active, kind)
    return out if return_ou else out[0]


@functools.partial(jax.jit, static_argnames="kind")
def _ma_fbm_path(tree, ts, hurst, gammas, weights, key, T, active, kind):
    dtype = tree.t0.dtype
    ts = jnp.asarray(ts, dtype)
    prev = jnp.concatenate([tree.t0[None], ts[:-1]])
    return _ma_fbm_steps(tree.evaluate(prev, ts), ts - prev, hurst, gammas, weights, key, T, active, kind)


@functools.partial(jax.jit, static_argnames="kind")
def _ma_fbm_steps(inc, h, hurst, gammas, weights, key, T, active, kind):
    comps = [x for x in (inc.W, inc.H, inc.K) if x is not None]
    dtype = comps[0].dtype
    w = _masked_weights(hurst, gammas, weights, T, kind, active).astype(dtype)
    g = jnp.asarray(gammas, dtype)
    decay, coefs, _ = _ou_coefficients(g, jnp.asarray(h, dtype), len(comps))
    shape = comps[0].shape[1:]
    expand = (slice(None),) + (None,) * len(shape) + (slice(None),)  # (n, K) -> (n, 1.., K)
    # Each step's fresh part: sum_j c_j * increment_j, shape (n,) + S + (K,).
    fresh = sum(c[expand] * x[..., None] for c, x in zip(coefs, comps))
    y0 = jnp.zeros(shape + (g.shape[0],), dtype)
    if kind == "I":
        y0 = _sample_stationary(key, g, shape).astype(dtype)

    def step(y, inputs):
        dec, new = inputs
        y = dec[expand[1:]] * y + new
        return y, y

    _, ys = jax.lax.scan(step, y0, (decay, fresh))
    return jnp.sum(w * (ys - y0), axis=-1), ys
