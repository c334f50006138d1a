r"""A Brownian path on a fixed grid: increments and Levy areas for constant-step solvers.

On :math:`t_k = t_0 + k\,\Delta t`, the increments :math:`W_k \sim N(0, \Delta t)`,
:math:`H_k \sim N(0, \Delta t/12)`, :math:`K_k \sim N(0, \Delta t/720)` are all independent: the same
law as the tree's queries on that grid, drawn in one call. :func:`coarsen` joins consecutive steps
by Chen's relation, giving the *same* path on a grid ``factor`` times coarser, which is what a
strong-convergence study needs.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from ..errors import check_range, concrete_value
from ._args import as_key, as_shape, component_scale, positive_int
from ._increment import BrownianIncrement, from_moments, join, levy_dim, to_moments

__all__ = ["BrownianGrid", "coarsen"]


@jax.tree_util.register_pytree_node_class
class BrownianGrid:
    r"""Brownian increments (and Levy areas) over the ``n`` steps of a uniform grid.

    Args:
        t0, t1: the interval, ``t0 < t1``.
        n: number of steps, a positive int (static: a new ``n`` compiles once).
        shape: shape of the Brownian motion.
        key: a ``jax.random`` key.
        levy_area: ``None``, ``"space-time"`` or ``"space-time-time"``.
    """

    def __init__(self, t0, t1, n: int, shape: Sequence[int] | int = (), key=None, levy_area=None):
        if key is None:
            raise ValueError("key must be a jax.random key (e.g. jax.random.key(0)), got None")
        levy_dim(levy_area)
        n = positive_int("n (number of steps)", n)
        check_range("t0", t0)
        check_range("t1", t1)
        c0, c1 = concrete_value(t0), concrete_value(t1)
        if c0 is not None and c1 is not None and not c1 > c0:
            raise ValueError(f"t1 must be greater than t0 = {float(c0):g}, got t1 = {float(c1):g}")
        dtype = jnp.result_type(float)
        self.t0, self.t1 = jnp.asarray(t0, dtype), jnp.asarray(t1, dtype)
        self.key = as_key(key)
        self.n, self.shape, self.levy_area = n, as_shape(shape), levy_area

    def tree_flatten(self):
        return (self.t0, self.t1, self.key), (self.n, self.shape, self.levy_area)

    @classmethod
    def tree_unflatten(cls, aux, children):
        obj = object.__new__(cls)
        obj.t0, obj.t1, obj.key = children
        obj.n, obj.shape, obj.levy_area = aux
        return obj

    @property
    def dt(self) -> jax.Array:
        return (self.t1 - self.t0) / self.n

    @property
    def ts(self) -> jax.Array:
        """The ``n + 1`` grid times."""
        return jnp.linspace(self.t0, self.t1, self.n + 1)

    def increments(self) -> BrownianIncrement:
        """All ``n`` increments; fields of shape ``(n,) + shape``."""
        d = levy_dim(self.levy_area)
        dtype = self.t0.dtype
        scale = component_scale(d, dtype)
        z = jax.random.normal(self.key, (d, self.n) + self.shape, dtype)
        scale = scale.reshape((d,) + (1,) * (z.ndim - 1))
        return BrownianIncrement.from_stack(jnp.sqrt(self.dt) * scale * z)

    def path(self) -> jax.Array:
        """``W`` at the grid times, starting from 0; shape ``(n + 1,) + shape``."""
        w = self.increments().W
        return jnp.concatenate([jnp.zeros((1,) + self.shape, w.dtype), jnp.cumsum(w, axis=0)])


def coarsen(increments: BrownianIncrement, dt, factor: int) -> BrownianIncrement:
    r"""Join each ``factor`` consecutive steps of length ``dt`` into one step of length ``factor*dt``.

    Uses Chen's relation, so (W, H, K) of the coarse steps are exactly those of the same path.
    ``factor`` must divide the number of steps.
    """
    factor = positive_int("factor", factor)
    v = increments.stack()
    n = v.shape[1]
    if n % factor:
        raise ValueError(f"factor must divide the number of steps {n}, got {factor}")
    check_range("dt", dt, low=0.0, low_open=True)
    v = v.reshape((v.shape[0], n // factor, factor) + v.shape[2:])
    m = jax.vmap(lambda x: to_moments(dt, x), in_axes=2, out_axes=2)(v)

    def step(carry, m_k):
        h, acc = carry
        return join(h, acc, dt, m_k), None

    zero = jnp.zeros_like(m[:, :, 0])
    (h, total), _ = jax.lax.scan(step, (jnp.zeros((), v.dtype), zero), jnp.moveaxis(m, 2, 0))
    return BrownianIncrement.from_stack(from_moments(h, total))
