r"""The exact Brownian bridge for (W, H, K): splitting an interval at any point.

Given :math:`(W, H, K)` over :math:`[s, t]` (length :math:`h`), the pieces over :math:`[s, s + \rho h]`
and :math:`[s + \rho h, t]` are Gaussian. The left piece is

.. math::
    \begin{pmatrix} W_L \\ H_L \\ K_L \end{pmatrix}
    = A(\rho) \begin{pmatrix} W \\ H \\ K \end{pmatrix} + \sqrt h\, L(\rho)\, \xi,
    \qquad \xi \sim N(0, I),\quad L L^\top = \Sigma(\rho),

and the right piece follows from Chen's relation. With :math:`q = \rho(1-\rho)`, conditioning on
(W, H, K):

.. math::
    A = \begin{pmatrix} \rho & 6q & 60 q (1-2\rho) \\ 0 & \rho^2 & 30\rho^2(1-\rho) \\ 0 & 0 & \rho^3
    \end{pmatrix}, \qquad
    \Sigma = \begin{pmatrix}
      q(20\rho^4 - 40\rho^3 + 28\rho^2 - 8\rho + 1) & -\tfrac12\rho^2 q(10\rho^2 - 15\rho + 6)
        & \tfrac1{12}\rho^3 q (2\rho - 1) \\
      \cdot & \tfrac1{12} q(15\rho^4 - 15\rho^3 + \rho^2 + \rho + 1) & -\tfrac1{24}\rho^4 q \\
      \cdot & \cdot & \tfrac1{720} q(\rho^4 + \rho^3 + \rho^2 + \rho + 1)
    \end{pmatrix}.

Conditioning on (W, H) only: :math:`A = \begin{pmatrix}\rho & 6q\\ 0 & \rho^2\end{pmatrix}`,
:math:`\Sigma = \begin{pmatrix} q(1 - 3q) & -\rho^2 q/2 \\ \cdot & q(\rho^2 + \rho + 1)/12\end{pmatrix}`;
on W only: :math:`W_L = \rho W + \sqrt{h q}\,\xi` (the classical Brownian bridge).

At the midpoint (:math:`\rho = 1/2`, conditioning on W and H) this is the construction of
Jelincic, Foster & Kidger (2024), section 3: :math:`W_L = \tfrac12 W + \tfrac32 H + Z`,
:math:`H_L = \tfrac14 H - \tfrac12 Z + \tfrac12 N` with :math:`Z \sim N(0, h/16)`,
:math:`N \sim N(0, h/12)`. The formulas come from projecting the pieces' Legendre functionals onto
the whole interval's (``tests/core/test_bridge.py`` re-derives them by quadrature).

At the midpoint the two halves come out in closed form (:func:`split_midpoint`).

For :math:`\rho > 1/2` the right piece is sampled instead, through the time reversal
:math:`(W, H, K) \mapsto (W, -H, K)`, so the piece recovered by Chen's relation is never the shorter
one (no cancellation). That branch uses the noise :math:`(-\xi_1, \xi_2, -\xi_3)`: an orthogonal map,
so the law is unchanged, chosen so that both branches give the same pieces at :math:`\rho = 1/2`.
With one leaf's noise fixed, the pieces are then continuous in :math:`\rho`: a path queried inside
a leaf has no jump at the leaf's midpoint.
"""

from __future__ import annotations

import math

import jax.numpy as jnp

from ._increment import (
    BrownianIncrement,
    from_moments,
    reflect,
    remove_left,
    remove_right,
    to_moments,
)

__all__ = ["bridge_mean_cov", "split", "split_midpoint", "split_increment"]


def bridge_mean_cov(rho, d: int):
    """``A(rho)`` and ``Sigma(rho)`` (per unit length) of the left piece, conditioning on ``d`` components."""
    r = jnp.asarray(rho)
    q = r * (1.0 - r)
    zero = jnp.zeros_like(r)
    if d == 1:
        return jnp.stack([r])[:, None], jnp.stack([q])[:, None]
    if d == 2:
        a = jnp.stack([jnp.stack([r, 6.0 * q]), jnp.stack([zero, r * r])])
        s_ww = q * (1.0 - 3.0 * q)
        s_wh = -0.5 * r * r * q
        s_hh = q * (r * r + r + 1.0) / 12.0
        s = jnp.stack([jnp.stack([s_ww, s_wh]), jnp.stack([s_wh, s_hh])])
        return a, s
    if d == 3:
        r2, r3, r4 = r * r, r * r * r, r * r * r * r
        a = jnp.stack(
            [
                jnp.stack([r, 6.0 * q, 60.0 * q * (1.0 - 2.0 * r)]),
                jnp.stack([zero, r2, 30.0 * r2 * (1.0 - r)]),
                jnp.stack([zero, zero, r3]),
            ]
        )
        s_ww = q * (20.0 * r4 - 40.0 * r3 + 28.0 * r2 - 8.0 * r + 1.0)
        s_wh = -0.5 * r2 * q * (10.0 * r2 - 15.0 * r + 6.0)
        s_wk = r3 * q * (2.0 * r - 1.0) / 12.0
        s_hh = q * (15.0 * r4 - 15.0 * r3 + r2 + r + 1.0) / 12.0
        s_hk = -r4 * q / 24.0
        s_kk = q * (r4 + r3 + r2 + r + 1.0) / 720.0
        s = jnp.stack(
            [
                jnp.stack([s_ww, s_wh, s_wk]),
                jnp.stack([s_wh, s_hh, s_hk]),
                jnp.stack([s_wk, s_hk, s_kk]),
            ]
        )
        return a, s
    raise ValueError(f"d must be 1, 2 or 3, got {d}")


def _cholesky(s):
    """Lower Cholesky factor of a small PSD matrix, written out so that a zero matrix gives zeros."""
    d = s.shape[0]

    def sqrt0(x):
        return jnp.sqrt(jnp.maximum(x, 0.0))

    def div0(a, b):
        return jnp.where(b > 0, a / jnp.where(b > 0, b, 1.0), 0.0)

    zero = jnp.zeros_like(s[0, 0])
    l00 = sqrt0(s[0, 0])
    if d == 1:
        return jnp.stack([jnp.stack([l00])])
    l10 = div0(s[1, 0], l00)
    l11 = sqrt0(s[1, 1] - l10 * l10)
    if d == 2:
        return jnp.stack([jnp.stack([l00, zero]), jnp.stack([l10, l11])])
    l20 = div0(s[2, 0], l00)
    l21 = div0(s[2, 1] - l20 * l10, l11)
    l22 = sqrt0(s[2, 2] - l20 * l20 - l21 * l21)
    return jnp.stack(
        [jnp.stack([l00, zero, zero]), jnp.stack([l10, l11, zero]), jnp.stack([l20, l21, l22])]
    )


def split(h, v, rho, noise):
    """Split an interval of length ``h`` with components ``v`` at fraction ``rho`` in [0, 1].

    Args:
        h: scalar length of the interval.
        v: ``(d,) + shape`` array of (W, H, K)[:d] over the interval.
        rho: scalar split fraction; 0 and 1 give an empty piece.
        noise: ``(d,) + shape`` standard normal draws (the only randomness).

    Returns:
        ``((h_left, m_left), (h_right, m_right))`` with the pieces in moment form
        (see :mod:`._increment`).
    """
    d = v.shape[0]
    dtype = v.dtype
    rho = jnp.clip(jnp.asarray(rho, dtype), 0.0, 1.0)
    h = jnp.asarray(h, dtype)
    flip = rho > 0.5
    r = jnp.where(flip, 1.0 - rho, rho)
    v_frame = jnp.where(flip, reflect(v), v)
    # Orthogonal change of noise in the reversed frame: continuity at rho = 1/2 (see above).
    sign = jnp.asarray([-1.0, 1.0, -1.0][:d], dtype).reshape((d,) + (1,) * (v.ndim - 1))
    noise = jnp.where(flip, sign * noise, noise)
    a, s = bridge_mean_cov(r, d)
    chol = _cholesky(s)
    piece = jnp.einsum("ij,j...->i...", a, v_frame) + jnp.sqrt(h) * jnp.einsum(
        "ij,j...->i...", chol, noise
    )
    piece = jnp.where(flip, reflect(piece), piece)
    h_piece = r * h
    m_whole = to_moments(h, v)
    m_piece = to_moments(h_piece, piece)
    h_rest_r, m_rest_r = remove_left(h, m_whole, h_piece, m_piece)  # piece is the left one
    h_rest_l, m_rest_l = remove_right(h, m_whole, h_piece, m_piece)  # piece is the right one
    h_left = jnp.where(flip, h_rest_l, h_piece)
    m_left = jnp.where(flip, m_rest_l, m_piece)
    h_right = jnp.where(flip, h_piece, h_rest_r)
    m_right = jnp.where(flip, m_piece, m_rest_r)
    return (h_left, m_left), (h_right, m_right)


def split_midpoint(h, v, noise):
    r"""Both halves of an interval of length ``h`` with components ``v`` (the tree's node split).

    With :math:`\xi \sim N(0, I)`, :math:`Z = \tfrac14\sqrt h\,\xi_1 \sim N(0, h/16)` and, for
    (W, H, K), :math:`Y = \tfrac{\sqrt 3}{48}\sqrt h\,\xi_2`, :math:`X = \tfrac{\sqrt 5}{120}\sqrt h\,\xi_3`:

    .. math::
        W_{L,R} = \tfrac12 W \pm (\tfrac32 H + Z), \quad
        H_{L,R} = \tfrac14 H - \tfrac12 Z \pm (\tfrac{15}4 K + Y), \quad
        K_{L,R} = \tfrac18 K - \tfrac12 Y \pm X;

    for (W, H) only, :math:`H_{L,R} = \tfrac14 H - \tfrac12 Z \pm \tfrac12 N` with
    :math:`N = \sqrt{h/12}\,\xi_2`; for W only, :math:`W_{L,R} = \tfrac12 W \pm \tfrac12\sqrt h\,\xi_1`.
    These are :func:`split` at :math:`\rho = 1/2` (the test suite checks it).

    Returns:
        ``(even, odd)`` with ``left = even + odd`` and ``right = even - odd``, each ``(d,) + shape``.
    """
    d = v.shape[0]
    rh = jnp.sqrt(jnp.asarray(h, v.dtype))
    if d == 1:
        return 0.5 * v, 0.5 * rh * noise
    z = 0.25 * rh * noise[0]
    if d == 2:
        even = jnp.stack([0.5 * v[0], 0.25 * v[1] - 0.5 * z])
        odd = jnp.stack([1.5 * v[1] + z, (0.5 / math.sqrt(12.0)) * rh * noise[1]])
        return even, odd
    y = (math.sqrt(3.0) / 48.0) * rh * noise[1]
    x = (math.sqrt(5.0) / 120.0) * rh * noise[2]
    even = jnp.stack([0.5 * v[0], 0.25 * v[1] - 0.5 * z, 0.125 * v[2] - 0.5 * y])
    odd = jnp.stack([1.5 * v[1] + z, 3.75 * v[2] + y, x])
    return even, odd


def split_increment(h, increment, rho, noise):
    r"""Cut an interval of length ``h`` at fraction ``rho`` with the exact bridge (public form of :func:`split`).

    Args:
        h: scalar length of the interval.
        increment: :class:`~solverlab.brownian.BrownianIncrement` over the interval (fields of one
            shape; ``H``/``K`` present or not).
        rho: scalar in [0, 1].
        noise: standard normals, shape ``(d,) + shape`` with ``d`` the number of fields present.

    Returns:
        ``(left, right)``, two :class:`~solverlab.brownian.BrownianIncrement`\ s over
        :math:`[s, s + \rho h]` and :math:`[s + \rho h, t]`.
    """
    (hl, ml), (hr, mr) = split(h, increment.stack(), rho, noise)
    left = BrownianIncrement.from_stack(from_moments(hl, ml))
    right = BrownianIncrement.from_stack(from_moments(hr, mr))
    return left, right
