r"""Brownian increments with space-time(-time) Levy area, and Chen's relation for joining them.

Conventions (as in Diffrax and Foster's thesis). Over :math:`[s, t]` with :math:`h = t - s`,

.. math::
    W_{s,t} = W_t - W_s, \qquad
    H_{s,t} = \frac1h \int_s^t \Big(W_{s,r} - \frac{r-s}{h} W_{s,t}\Big)\,dr, \\
    K_{s,t} = \frac1{h^2} \int_s^t \Big(W_{s,r} - \frac{r-s}{h} W_{s,t}\Big)\Big(\frac h2 - (r-s)\Big)\,dr .

Written as Ito integrals, :math:`W = \int dW`, :math:`H = -\int \tfrac12 P_1(x)\,dW_r` and
:math:`K = \int \tfrac1{12} P_2(x)\,dW_r` with :math:`x = (r-s)/h` and the shifted Legendre
polynomials :math:`P_1 = 2x - 1`, :math:`P_2 = 6x^2 - 6x + 1`. Orthogonality of the polynomials makes
:math:`W, H, K` independent with variances :math:`h,\ h/12,\ h/720`.

Joining intervals is easiest in the *moments* :math:`m = (W,\ M_1,\ M_2)` with
:math:`M_1 = \int_s^t W_{s,r}\,dr` and :math:`M_2 = \int_s^t W_{s,r}(r - s)\,dr`:

.. math::
    M_1 = h\,(H + W/2), \qquad M_2 = h^2\,(H/2 + W/3 - K),

and for :math:`[a, b]` (length :math:`h_1`) followed by :math:`[b, c]` (length :math:`h_2`), Chen's relation

.. math::
    W = W^{(1)} + W^{(2)}, \quad
    M_1 = M_1^{(1)} + M_1^{(2)} + h_2 W^{(1)}, \quad
    M_2 = M_2^{(1)} + M_2^{(2)} + h_1 M_1^{(2)} + W^{(1)}\big(h_1 h_2 + h_2^2/2\big).

The empty interval (all zeros) is the identity, so sums need no division by a small length.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

__all__ = ["BrownianIncrement", "LEVY_AREAS", "levy_dim"]

#: Accepted values of ``levy_area`` and how many of (W, H, K) each carries.
LEVY_AREAS = {None: 1, "space-time": 2, "space-time-time": 3}


def levy_dim(levy_area) -> int:
    """Number of stored components (1: W; 2: W, H; 3: W, H, K)."""
    if levy_area not in LEVY_AREAS:
        raise ValueError(
            f"levy_area must be one of None, 'space-time', 'space-time-time', got {levy_area!r}"
        )
    return LEVY_AREAS[levy_area]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class BrownianIncrement:
    """The increment ``W`` over an interval and, when asked for, its Levy areas ``H`` and ``K``.

    Each field has shape ``batch_shape + shape``; ``H``/``K`` are ``None`` when not requested.
    """

    W: jax.Array
    H: jax.Array | None = None
    K: jax.Array | None = None

    @classmethod
    def from_stack(cls, v: jax.Array) -> "BrownianIncrement":
        """From a stacked array ``v`` with leading axis ``(W, H, K)[:d]``."""
        d = v.shape[0]
        return cls(W=v[0], H=v[1] if d > 1 else None, K=v[2] if d > 2 else None)

    def stack(self) -> jax.Array:
        """The stored components stacked on a new leading axis."""
        return jnp.stack([x for x in (self.W, self.H, self.K) if x is not None])


def _bcast(h, like):
    """Give a scalar-per-query length ``h`` trailing axes to broadcast against ``like``."""
    h = jnp.asarray(h, like.dtype)
    return h.reshape(h.shape + (1,) * (like.ndim - h.ndim))


def to_moments(h, v):
    """(W, H, K)[:d] -> (W, M1, M2)[:d] over an interval of length ``h``."""
    d = v.shape[0]
    hb = _bcast(h, v[0])
    w = v[0]
    out = [w]
    if d > 1:
        out.append(hb * (v[1] + 0.5 * w))
    if d > 2:
        out.append(hb * hb * (0.5 * v[1] + w / 3.0 - v[2]))
    return jnp.stack(out)


def from_moments(h, m):
    """(W, M1, M2)[:d] -> (W, H, K)[:d]; an empty interval (``h == 0``) gives zeros."""
    d = m.shape[0]
    hb = _bcast(h, m[0])
    positive = hb > 0
    safe = jnp.where(positive, hb, 1.0)
    w = m[0]
    out = [w]
    if d > 1:
        out.append(jnp.where(positive, m[1] / safe - 0.5 * w, 0.0))
    if d > 2:
        k = m[1] / (2.0 * safe) - (m[2] / safe) / safe + w / 12.0  # h*h may underflow
        out.append(jnp.where(positive, k, 0.0))
    return jnp.stack(out)


def join(h1, m1, h2, m2):
    """Chen's relation: moments of ``[a, b]`` (length ``h1``) followed by ``[b, c]`` (length ``h2``)."""
    d = m1.shape[0]
    h1b, h2b = _bcast(h1, m1[0]), _bcast(h2, m1[0])
    out = [m1[0] + m2[0]]
    if d > 1:
        out.append(m1[1] + m2[1] + h2b * m1[0])
    if d > 2:
        out.append(m1[2] + m2[2] + h1b * m2[1] + m1[0] * (h1b * h2b + 0.5 * h2b * h2b))
    return h1 + h2, jnp.stack(out)


def remove_left(h, m, h1, m1):
    """Moments of ``[b, c]`` from those of ``[a, c]`` (length ``h``) and ``[a, b]`` (length ``h1``)."""
    d = m.shape[0]
    h2 = h - h1
    h1b, h2b = _bcast(h1, m[0]), _bcast(h2, m[0])
    w2 = m[0] - m1[0]
    out = [w2]
    if d > 1:
        out.append(m[1] - m1[1] - h2b * m1[0])
    if d > 2:
        out.append(m[2] - m1[2] - h1b * out[1] - m1[0] * (h1b * h2b + 0.5 * h2b * h2b))
    return h2, jnp.stack(out)


def remove_right(h, m, h2, m2):
    """Moments of ``[a, b]`` from those of ``[a, c]`` (length ``h``) and ``[b, c]`` (length ``h2``)."""
    d = m.shape[0]
    h1 = h - h2
    h1b, h2b = _bcast(h1, m[0]), _bcast(h2, m[0])
    w1 = m[0] - m2[0]
    out = [w1]
    if d > 1:
        out.append(m[1] - m2[1] - h2b * w1)
    if d > 2:
        out.append(m[2] - m2[2] - h1b * m2[1] - w1 * (h1b * h2b + 0.5 * h2b * h2b))
    return h1, jnp.stack(out)


def reflect(v):
    """Time reversal :math:`r \\mapsto s + t - r` maps (W, H, K) to (W, -H, K)."""
    if v.shape[0] == 1:
        return v
    return v.at[1].multiply(-1.0)
