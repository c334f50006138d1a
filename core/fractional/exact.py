r"""Exact fractional Brownian motion on a grid: Davies-Harte circulant embedding, and Cholesky.

On the grid :math:`t_j = j\,T/n`, :math:`j = 0, \dots, n`, the increments of standard fBM are
fractional Gaussian noise, a stationary Gaussian sequence with autocovariance
:math:`\Delta t^{2H} r(k)`, :math:`\Delta t = T/n` (:mod:`.covariance`). Its :math:`n \times n`
Toeplitz covariance is the top-left block of the circulant matrix :math:`C` of size :math:`M = 2n`
with first row

.. math::
    c = \big(r(0), r(1), \dots, r(n-1), r(n), r(n-1), \dots, r(1)\big).

A circulant matrix is diagonalised by the discrete Fourier transform,
:math:`C = \frac1M F^{*} \Lambda F`, with eigenvalues :math:`\lambda = F c`, real since :math:`c` is
real and symmetric: :math:`\lambda_k = 2\,\mathrm{Re}\,(F c')_k` with the zero-padded half row
:math:`c' = (r(0)/2, r(1), \dots, r(n-1), r(n)/2, 0, \dots, 0)`, one real FFT. For fGn they are
nonnegative at every :math:`H \in (0, 1)` (for :math:`H \ge 1/2` the autocovariance is nonnegative,
decreasing and convex, Dietrich & Newsam 1997; for :math:`H < 1/2` it is negative at every nonzero
lag, Craigmile 2003; the tests check it numerically), so :math:`C` is a covariance (rounding below 0
is clipped) and

.. math::
    Y = \frac{1}{\sqrt M} F^{*}\big(\Lambda^{1/2} W\big) \sim N(0, C)

for complex Gaussian :math:`W` with Hermitian symmetry :math:`W_{M-k} = \overline{W_k}`
(:math:`W_0, W_n` real :math:`N(0,1)`, else real and imaginary parts :math:`N(0, 1/2)`; that is
:math:`2n` standard normals, the embedding's degrees of freedom): :math:`Y` is real, one inverse real
FFT of size :math:`2n`, and :math:`Y_0, \dots, Y_{n-1}` is exact fGn. Davies & Harte (1987); Wood &
Chan (1994); Dietrich & Newsam (1997). (One complex FFT of a non-symmetric :math:`W` would give two
independent paths, its real and imaginary parts, for the same normals and about the same work; the
Hermitian form keeps one code path for any batch.)

The path :math:`B_j = \sum_{i<j} X_i` is read off the same FFT: with :math:`\omega = e^{2\pi i/M}`,
:math:`\sum_{i<j}\omega^{ik} = (\omega^{jk} - 1)/(\omega^k - 1)`, so dividing the spectrum by
:math:`\omega^k - 1` (:math:`1/(\omega^k - 1) = -\tfrac12 - \tfrac i2\cot(\pi k/M)`) turns the
inverse FFT into the partial sums, less its value at 0, plus :math:`j\,\Lambda_0^{1/2}W_0/\sqrt M`
from the zero frequency. No cumulative sum: the batch passes through memory once less.

Cost per path: :math:`2n` normals and one real FFT of size :math:`2n`; the eigenvalues cost one more
real FFT per call, shared by the batch. ``n`` and ``batch_shape`` are static (each new pair compiles
once); ``hurst`` and ``T`` are traced, so a new Hurst index never recompiles.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp

from ..brownian._args import as_key, as_shape, positive_int
from ..errors import check_range, concrete_value
from .covariance import autocovariance_row, check_hurst

__all__ = ["fbm", "fgn", "fbm_cholesky", "circulant_eigenvalues"]


def fbm(key, n: int, hurst, T=1.0, batch_shape: Sequence[int] | int = ()) -> jax.Array:
    r"""Exact standard fBM on :math:`t_j = jT/n`, :math:`j = 0..n`, by Davies-Harte circulant embedding.

    The paths have :math:`B_0 = 0` and
    :math:`\operatorname{Cov}(B_{t_i}, B_{t_j}) = \tfrac12(t_i^{2H} + t_j^{2H} - |t_i - t_j|^{2H})`
    exactly (to float rounding); :math:`H = 1/2` is Brownian motion. Davies & Harte (1987),
    Dietrich & Newsam (1997).

    Args:
        key: a ``jax.random`` key; it alone determines the paths (``fgn`` with the same key gives
            their increments).
        n: number of steps, an int >= 2 (static).
        hurst: Hurst index :math:`H \in (0, 1)`, a scalar (traced: a new value does not recompile).
        T: horizon :math:`T > 0`, a scalar (traced). By self-similarity the paths are
            :math:`T^H` times those on :math:`[0, 1]` drawn with the same key.
        batch_shape: leading shape of independent paths (static), drawn in one call.

    Returns:
        Array of shape ``batch_shape + (n + 1,)`` in the floating dtype of ``hurst`` and ``T``
        (Python floats: JAX's default, float32 unless x64 is on). A concrete bad argument raises
        ``ValueError`` before anything is compiled; a traced ``hurst`` outside (0, 1) or ``T <= 0``
        gives NaN.

    Cost: :math:`2n` normals and one inverse real FFT of size :math:`2n` per path, plus one real
    FFT of size :math:`2n` per call for the eigenvalues.

    Example:
        >>> paths = fbm(jax.random.key(0), 1024, 0.7, batch_shape=(100,))   # (100, 1025)
        >>> sweep = jax.vmap(lambda h: fbm(jax.random.key(0), 1024, h))(jnp.linspace(0.1, 0.9, 9))
    """
    return _draw(key, n, hurst, T, batch_shape, "fbm")


def fgn(key, n: int, hurst, T=1.0, batch_shape: Sequence[int] | int = ()) -> jax.Array:
    r"""Exact fractional Gaussian noise: the ``n`` increments of :func:`fbm` on :math:`t_j = jT/n`.

    A stationary Gaussian sequence with
    :math:`\operatorname{Cov}(X_i, X_{i+k}) = \frac{\Delta t^{2H}}{2}(|k+1|^{2H} - 2|k|^{2H} + |k-1|^{2H})`,
    :math:`\Delta t = T/n`, by Davies-Harte circulant embedding (one inverse real FFT of size
    :math:`2n` per path). Same arguments as :func:`fbm`; returns shape ``batch_shape + (n,)``.
    With the same key, ``fbm`` is ``0`` followed by the cumulative sums of ``fgn`` (to rounding).
    """
    return _draw(key, n, hurst, T, batch_shape, "fgn")


def fbm_cholesky(key, n: int, hurst, T=1.0, batch_shape: Sequence[int] | int = ()) -> jax.Array:
    r"""Exact fBM on :math:`t_j = jT/n` by a Cholesky factor of the fGn covariance (small-n reference).

    :math:`X = \Delta t^H L z` with :math:`L L^\top = (r(|i-j|))_{i,j<n}` and :math:`z \sim N(0, I_n)`,
    then :math:`B_j = \sum_{i<j} X_i`. :math:`O(n^3)` work and :math:`O(n^2)` memory: a reference
    for tests and teaching, not for large ``n`` (in float32 the factorisation may fail, giving NaN,
    from a few hundred steps at :math:`H` near 1: use float64). Same arguments and result as
    :func:`fbm` (same law, different draws).
    """
    key, n, hurst, T, batch_shape = _checked(key, n, hurst, T, batch_shape)
    return _cholesky_paths(key, hurst, T, n=n, batch_shape=batch_shape)


def circulant_eigenvalues(n: int, hurst, dtype=None) -> jax.Array:
    r"""Eigenvalues :math:`\lambda_0..\lambda_n` of the size-:math:`2n` circulant embedding of unit-step fGn.

    :math:`\lambda_k = \sum_{j<2n} c_j e^{-2\pi i jk/2n}` with
    :math:`c = (r(0), \dots, r(n), r(n-1), \dots, r(1))`; the rest follow from
    :math:`\lambda_{2n-k} = \lambda_k`. Tiny negative values from rounding are kept (not clipped),
    so this shows how close to the edge a given ``n``, ``hurst`` and dtype are.

    Args:
        n: number of steps, an int >= 2 (static).
        hurst: Hurst index in (0, 1), a scalar.
        dtype: floating dtype; default that of ``hurst`` (Python floats: JAX's default).

    Returns:
        Array of shape ``(n + 1,)``.
    """
    n = positive_int("n", n, low=2)
    _check_scalar("hurst", hurst)
    check_hurst(hurst)
    dtype = dtype or _float_dtype(hurst)
    return _eigenvalues_jit(jnp.asarray(hurst, dtype), n)


# --- checks at the Python boundary --------------------------------------------------------------


def _float_dtype(*xs):
    return jnp.promote_types(jnp.result_type(float, *xs), jnp.float32)


def _check_scalar(name, value):
    arr = concrete_value(value)
    if arr is not None and arr.shape != ():
        raise ValueError(
            f"{name} must be a scalar, got shape {arr.shape} (vmap over {name} for a sweep)"
        )


def _checked(key, n, hurst, T, batch_shape):
    """Validate every argument (no tracing yet); return them in the form the jitted kernels take."""
    if key is None:
        raise ValueError("key must be a jax.random key (e.g. jax.random.key(0)), got None")
    n = positive_int("n", n, low=2)
    try:
        batch_shape = as_shape(batch_shape)
    except ValueError:
        raise ValueError(
            f"batch_shape must be a tuple of non-negative ints, got {batch_shape!r}"
        ) from None
    _check_scalar("hurst", hurst)
    check_hurst(hurst)
    _check_scalar("T", T)
    check_range("T", T, low=0.0, low_open=True)
    key = as_key(key)
    # One fixed dtype for traced scalars: Python floats, NumPy scalars and arrays share one compile.
    dtype = _float_dtype(hurst, T)
    return key, n, jnp.asarray(hurst, dtype), jnp.asarray(T, dtype), batch_shape


def _draw(key, n, hurst, T, batch_shape, kind):
    key, n, hurst, T, batch_shape = _checked(key, n, hurst, T, batch_shape)
    return _davies_harte(key, hurst, T, n=n, batch_shape=batch_shape, kind=kind)


# --- kernels ------------------------------------------------------------------------------------


def _eigenvalues(hurst, n):
    r"""Circulant eigenvalues (n + 1,) from one real FFT of size 2n of the half row.

    With :math:`c' = (r(0)/2, r(1), \dots, r(n-1), r(n)/2, 0, \dots, 0)`,
    :math:`\lambda_k = 2\,\mathrm{Re}\,(F c')_k = r(0) + 2\sum_{0<j<n} r(j)\cos\frac{\pi jk}{n}
    + (-1)^k r(n)`. The mirrored half of the row is never built, and nothing but a factor 2 is
    left to do after the FFT: XLA fuses whatever follows into the batch pass, per element.
    """
    r = autocovariance_row(n, 2 * hurst)
    k = jnp.arange(n + 1)
    half_row = jnp.where((k == 0) | (k == n), 0.5, 1.0).astype(r.dtype) * r
    return 2 * jnp.fft.rfft(half_row, n=2 * n).real


_eigenvalues_jit = jax.jit(_eigenvalues, static_argnums=1)


def _step_scale(hurst, T, n):
    r""":math:`\Delta t^H = (T/n)^H`, NaN when a traced ``hurst`` or ``T`` is out of range."""
    ok = (hurst > 0) & (hurst < 1) & (T > 0)
    return jnp.where(ok, jnp.exp(hurst * jnp.log(jnp.where(ok, T, 1.0) / n)), jnp.nan)


def _spectral_weights(hurst, T, n, kind):
    r"""Per-frequency weights :math:`(p, q, s, t)` and the step scale :math:`\Delta t^H`.

    The spectrum is :math:`(p z + q z') + i(s z + t z')` for standard normals :math:`z, z'`.

    fGn: :math:`V_k = \sqrt{\lambda_k}\,z_k` at :math:`k = 0, n` (real, as Hermitian symmetry
    needs), else :math:`\sqrt{\lambda_k/2}\,(z_k + i z'_k)`. fBM: :math:`U_k = V_k/(\omega^k - 1)`
    with :math:`1/(\omega^k - 1) = -\tfrac12 - \tfrac i2\cot\frac{\pi k}{2n}`, and :math:`U_0 = V_0`
    (not 0): a constant that the partial sums subtract, which leaves :math:`V_0` in the FFT's input,
    where the drift reads it.

    Computed under ``lax.cond`` on the validity of ``hurst`` and ``T`` (NaN otherwise): the branch
    also makes XLA materialise these ``4(n + 1)`` numbers once, instead of fusing them into the
    per-path pass and recomputing them for every path.
    """

    def weights(hurst, T):
        lam = jnp.maximum(_eigenvalues(hurst, n), 0.0)  # nonnegative for fGn; clip rounding
        k = jnp.arange(n + 1)
        ends = (k == 0) | (k == n)
        a = jnp.sqrt(jnp.where(ends, lam, 0.5 * lam))
        b = jnp.where(ends, 0.0, jnp.sqrt(0.5 * lam))
        scale = _step_scale(hurst, T, n)
        if kind == "fgn":
            return (a, 0.0 * a, 0.0 * a, b), scale
        live = k > 0
        theta = jnp.pi * jnp.where(live, k, 1).astype(lam.dtype) / (2 * n)
        cot = jnp.cos(theta) / jnp.sin(theta)
        p = jnp.where(live, -0.5 * a, a)
        return (p, 0.5 * cot * b, -0.5 * cot * a, -0.5 * b), scale

    def invalid(hurst, T):
        shapes = jax.eval_shape(weights, hurst, T)
        return jax.tree_util.tree_map(lambda x: jnp.full(x.shape, jnp.nan, x.dtype), shapes)

    ok = (hurst > 0) & (hurst < 1) & (T > 0)
    return jax.lax.cond(ok, weights, invalid, hurst, T)


@functools.partial(jax.jit, static_argnames=("n", "batch_shape", "kind"))
def _davies_harte(key, hurst, T, *, n, batch_shape, kind):
    """fGn (``kind="fgn"``, ``(..., n)``) or fBM (``"fbm"``, ``(..., n + 1)``) paths, one FFT each."""
    dtype = hurst.dtype
    (p, q, s, t), scale = _spectral_weights(hurst, T, n, kind)
    # 2n normals per path, the embedding's degrees of freedom: z_k (k = 0..n) and z'_k = z_{n+k}
    # (k = 1..n-1). An even count matters: JAX's threefry is several times slower on odd sizes.
    z = jax.random.normal(key, batch_shape + (2 * n,), dtype)
    z0 = z[..., : n + 1]
    z1 = jnp.concatenate([z[..., n:], jnp.zeros(batch_shape + (1,), dtype)], axis=-1)  # 0 at 0, n
    spectrum = jax.lax.complex(p * z0 + q * z1, s * z0 + t * z1)
    y = jnp.fft.irfft(spectrum, n=2 * n, norm="ortho")  # (1/sqrt M) sum_k V_k w^jk
    if kind == "fgn":
        return scale * y[..., :n]
    # Partial sums: irfft(U)_j - irfft(U)_0 + j V_0 / sqrt(M), V_0 read back from the FFT's input.
    drift = spectrum[..., :1].real / jnp.sqrt(jnp.asarray(2 * n, dtype))
    j = jnp.arange(n + 1, dtype=dtype)
    path = scale * (y[..., : n + 1] - y[..., :1] + j * drift)
    return jnp.where(j > 0, path, 0.0 * scale)  # exactly 0 (NaN if scale is): XLA may reassociate


@functools.partial(jax.jit, static_argnames=("n", "batch_shape"))
def _cholesky_paths(key, hurst, T, *, n, batch_shape):
    r"""fBM paths ``(..., n + 1)`` as partial sums of :math:`\Delta t^H L z`."""
    dtype = hurst.dtype
    r = autocovariance_row(n - 1, 2 * hurst)
    idx = jnp.arange(n)
    factor = jnp.linalg.cholesky(r[jnp.abs(idx[:, None] - idx[None, :])])
    z = jax.random.normal(key, batch_shape + (n,), dtype)
    # Full float32 products on GPUs too (their default may round the inputs to TF32).
    x = _step_scale(hurst, T, n) * jnp.matmul(z, factor.T, precision=jax.lax.Precision.HIGHEST)
    zero = jnp.zeros(batch_shape + (1,), dtype)
    return jnp.concatenate([zero, jnp.cumsum(x, axis=-1)], axis=-1)
