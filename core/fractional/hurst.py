r"""Estimating the Hurst index of a path, with a standard error: dilated quadratic variations.

For a path :math:`X_0, \dots, X_N` on an equispaced grid, the second-order differences at dilation
:math:`m`,

.. math::
    D_m(i) = X_{i+2m} - 2X_{i+m} + X_i, \qquad
    V_m = \frac{1}{N_m}\sum_{i=0}^{N_m - 1} D_m(i)^2, \quad N_m = N - 2m + 1,

of fBM (times any scale :math:`\sigma`, plus any linear drift, which the filter removes) have
:math:`\mathbb E V_m = \sigma^2\Delta t^{2H} (4 - 2^{2H})\, m^{2H}`. So :math:`\log V_m` is linear in
:math:`\log m` with slope :math:`2H`, and

.. math::
    \hat H = \tfrac12 \sum_m w_m \log V_m, \qquad
    w_m = \frac{x_m - \bar x}{\sum_{m'} (x_{m'} - \bar x)^2},\ x_m = \log m,

the least-squares slope over the dilations; with dilations :math:`(1, 2)` it is
:math:`\hat H = \tfrac12\log_2(V_2/V_1)`, the default :math:`(1, 2, 4, 8)` is about twice as
precise for small :math:`H`. Second differences make the :math:`D_m` short-range
dependent for every :math:`H \in (0, 1)`, so :math:`\hat H` is :math:`\sqrt N`-consistent and
asymptotically normal (Istas & Lang 1997; Kent & Wood 1997; Coeurjolly 2001).

Standard error by the delta method, exactly for the sample at hand: the :math:`D_m(i)` are jointly
Gaussian with :math:`\operatorname{Cov}(D_m(i), D_{m'}(i+d)) = \sigma^2\Delta t^{2H}\rho_{mm'}(d)`,
:math:`\rho_{mm'}(d) = \sum_s c^{mm'}_s r(d + s)` (:math:`r` the unit-step fGn autocovariance,
:math:`c^{mm'}` the cross-correlation of the two filters written on increments), and for Gaussian
sums of squares

.. math::
    \operatorname{Cov}\Big(\sum_i D_m(i)^2, \sum_j D_{m'}(j)^2\Big)
      = 2\sum_{i<N_m}\sum_{j<N_{m'}} \rho_{mm'}(j - i)^2,

so with :math:`\Sigma_{mm'} = \operatorname{Cov}(S_m, S_{m'})/(\mathbb E S_m\, \mathbb E S_{m'})`
(:math:`S_m = N_m V_m`), :math:`\operatorname{Var}\hat H \approx \tfrac14 w^\top\Sigma w`, evaluated at
:math:`\hat H` (clipped to [0.01, 0.99]). The same :math:`\Sigma` removes the second-order bias
of the logarithm, :math:`\mathbb E\log V_m \approx \log \mathbb E V_m - \Sigma_{mm}/2`, which
matters for short paths: :math:`\hat H` gets :math:`+\tfrac14\sum_m w_m\Sigma_{mm}`. It assumes
Gaussian fBM; for real data it is the error that fBM with the
estimated index would have, a lower bound when the model is wrong.
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ..brownian._args import positive_int
from .covariance import autocovariance_row

__all__ = ["HurstEstimate", "estimate_hurst"]

_H_EVAL = (0.01, 0.99)  # where the standard error is evaluated when the estimate strays
# rho(d)^2 decays like (d/m)^(4H-8): lags past 64 m_max add under 1e-6 of the variance at H = 0.99.
_MAX_LAG = 64


class HurstEstimate(NamedTuple):
    """An estimate of the Hurst index and its standard error (arrays of the batch shape)."""

    hurst: jax.Array
    stderr: jax.Array

    def interval(self, z: float = 1.96) -> tuple[jax.Array, jax.Array]:
        r"""The normal-approximation interval :math:`\hat H \pm z\,\mathrm{se}` (95% for ``z = 1.96``)."""
        return self.hurst - z * self.stderr, self.hurst + z * self.stderr


def estimate_hurst(path, dilations: Sequence[int] = (1, 2, 4, 8)) -> HurstEstimate:
    r"""Hurst index of fBM paths from dilated second-order quadratic variations, with a standard error.

    :math:`\hat H = \tfrac12` times the least-squares slope of :math:`\log V_m` on :math:`\log m`
    (module notes), plus the second-order bias correction
    :math:`\tfrac14\sum_m w_m \Sigma_{mm}` (since :math:`\mathbb E\log V_m \approx \log\mathbb E V_m
    - \Sigma_{mm}/2`). Dilations :math:`(1, 2)` give the ratio estimator
    :math:`\tfrac12\log_2(V_2/V_1)` (Istas & Lang 1997; Coeurjolly 2001); the default dyadic
    :math:`(1, 2, 4, 8)` has a standard error 1.2 to 2.8 times smaller (0.017 to 0.029 at 1024
    steps, smallest for small :math:`H`). The standard error is the delta method with the exact
    covariance of the filtered path at :math:`\hat H`, so ``interval()`` covers the true index
    about 95% of the time for Gaussian fBM (measured: 94-95% at 1024 steps, 94% at 128).

    Args:
        path: samples :math:`X_0..X_N` of a path on an equispaced grid along the last axis (values,
            not increments; the step, a scale factor and a linear drift do not matter), any
            leading batch shape. At least ``2 * max(dilations) + 2`` points.
        dilations: at least two distinct positive ints (static).

    Returns:
        :class:`HurstEstimate` with ``hurst`` and ``stderr`` of shape ``path.shape[:-1]``.
        Jit-able and batched; the estimate is not clipped to (0, 1); a path without variation
        (constant or linear) gives NaN.
    """
    dilations = _check_dilations(dilations)
    path = jnp.asarray(path)
    if not jnp.issubdtype(path.dtype, jnp.floating):
        path = path.astype(jnp.result_type(float))  # integer data: the default float
    path = path.astype(jnp.promote_types(path.dtype, jnp.float32))  # float16 is too coarse
    need = 2 * dilations[-1] + 2
    if path.ndim < 1 or path.shape[-1] < need:
        got = "a scalar" if path.ndim < 1 else f"{path.shape[-1]}"
        raise ValueError(
            f"path must have at least {need} points along its last axis for dilations "
            f"{dilations}, got {got}"
        )
    return _estimate(path, dilations)


def _check_dilations(dilations) -> tuple[int, ...]:
    try:
        values = [positive_int("dilations", d) for d in dilations]
    except TypeError:
        raise ValueError(f"dilations must be a sequence of positive ints, got {dilations!r}") from None
    out = tuple(sorted(set(values)))
    if len(out) < 2:
        raise ValueError(f"dilations must hold at least 2 distinct positive ints, got {dilations!r}")
    return out


def _slope_weights(dilations) -> np.ndarray:
    x = np.log(np.asarray(dilations, float))
    return (x - x.mean()) / np.sum((x - x.mean()) ** 2)


@functools.partial(jax.jit, static_argnames=("dilations",))
def _estimate(path, dilations):
    # Weighted sums written out, not as dot products: GPUs may run float32 dots in TF32.
    w = jnp.asarray(_slope_weights(dilations), path.dtype)
    logv = jnp.stack([jnp.log(_variation(path, m)) for m in dilations], axis=-1)
    naive = 0.5 * jnp.sum(w * logv, axis=-1)
    h_eval = jax.lax.stop_gradient(jnp.clip(naive, *_H_EVAL))
    cov = _relative_covariance(h_eval, path.shape[-1] - 1, dilations)
    # E log V_m ~ log E V_m - Sigma_mm / 2: add the second-order bias back.
    hurst = naive + 0.25 * jnp.sum(w * jnp.diagonal(cov, axis1=-2, axis2=-1), axis=-1)
    var = 0.25 * jnp.sum(w[:, None] * w[None, :] * cov, axis=(-2, -1))
    return HurstEstimate(hurst, jnp.sqrt(var))


def _variation(path, m):
    r""":math:`V_m`, the mean square of the second differences at dilation ``m`` (last axis)."""
    d = path[..., 2 * m :] - 2 * path[..., m:-m] + path[..., : -2 * m]
    return jnp.mean(d * d, axis=-1)


def _relative_covariance(h, n, dilations):
    r""":math:`\Sigma_{mm'} = \operatorname{Cov}(S_m, S_{m'})/(\mathbb E S_m\,\mathbb E S_{m'})`.

    At index ``h`` for a path of ``n`` steps: the covariance of :math:`(\log V_m)_m` to first order,
    shape ``h.shape + (D, D)``. Every pair's :math:`\rho_{mm'}(d) = \sum_s c^{mm'}_s r(d + s)` comes
    out of one correlation of the lag table with the stacked filters :math:`c^{mm'}`, then
    :math:`\operatorname{Cov}(S_m, S_{m'}) = 2\sum_d \#\{(i, j): j - i = d\}\,\rho_{mm'}(d)^2`.
    """
    kernels, counts, pairs, lo, reach = _pair_tables(n, dilations)
    r = autocovariance_row(n, 2 * h[..., None])  # lags 0..n
    pad = jnp.zeros(r.shape[:-1] + (2 * dilations[-1],), r.dtype)  # reached only by zero taps
    table = jnp.concatenate([pad, r[..., :0:-1], r, pad], axis=-1)  # lag l at l + n + pad
    start = lo - reach + n + pad.shape[-1]  # the window's first lag: first d, first tap
    window = table[..., start : start + counts.shape[-1] + kernels.shape[-1] - 1]
    batch = window.shape[:-1]
    rho = jax.lax.conv_general_dilated(
        window.reshape((-1, 1, window.shape[-1])),
        jnp.asarray(kernels[:, None, :], window.dtype),
        window_strides=(1,),
        padding="VALID",
        precision=jax.lax.Precision.HIGHEST,  # no reduced-precision (TF32) passes on GPUs
    ).reshape(batch + counts.shape)
    cov = 2 * jnp.sum(jnp.asarray(counts, rho.dtype) * rho * rho, axis=-1)  # (..., pairs)
    at_zero = rho[..., -lo]  # d = 0
    sizes = [n - 2 * m + 1 for m in dilations]
    mean = {p: sizes[p] * at_zero[..., k] for k, (p, q) in enumerate(pairs) if p == q}
    out = [[None] * len(dilations) for _ in dilations]
    for k, (p, q) in enumerate(pairs):
        out[p][q] = out[q][p] = cov[..., k] / (mean[p] * mean[q])
    return jnp.stack([jnp.stack(row, axis=-1) for row in out], axis=-2)


def _increment_filter(m) -> np.ndarray:
    r""":math:`D_m(i) = \sum_j b_j \xi_{i+j}` on increments :math:`\xi`: -1 (m times), then +1 (m times)."""
    return np.concatenate([-np.ones(m), np.ones(m)])


def _lag_start(n, dilations):
    """The first lag :math:`d` kept: :math:`-(N_{m_1} - 1)`, or the truncation, whichever is later."""
    return max(-(n - 2 * dilations[0]), -_MAX_LAG * dilations[-1])


def _pair_tables(n, dilations):
    r"""Static tables for the pairs :math:`p \le q`: filters, pair counts per lag, pairs, first lag, reach.

    ``kernels[k, t]`` is :math:`c^{pq}_s` at :math:`s = t - (2m_{max} - 1)`, with
    :math:`c^{pq} = b^{q} \star b^{p}` (cross-correlation, :math:`s` from :math:`-(2m_p - 1)` to
    :math:`2m_q - 1`); ``counts[k, i]`` is how many :math:`(i', j)` with :math:`i' < N_p`,
    :math:`j < N_q` have :math:`j - i' = d`, :math:`d` = lag start + ``i``.
    """
    reach = 2 * dilations[-1] - 1
    lo = _lag_start(n, dilations)
    d = np.arange(lo, -lo + 1)
    pairs, kernels, counts = [], [], []
    for p, mp in enumerate(dilations):
        for q, mq in enumerate(dilations):
            if q < p:
                continue
            c = np.convolve(_increment_filter(mq), _increment_filter(mp)[::-1])
            kernel = np.zeros(2 * reach + 1)
            kernel[reach - (2 * mp - 1) : reach + 2 * mq] = c
            sp, sq = n - 2 * mp + 1, n - 2 * mq + 1
            count = np.minimum(sp - 1, sq - 1 - d) - np.maximum(0, -d) + 1
            pairs.append((p, q))
            kernels.append(kernel)
            counts.append(np.maximum(count, 0).astype(float))
    return np.stack(kernels), np.stack(counts), tuple(pairs), lo, reach
