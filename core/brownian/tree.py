r"""The Virtual Brownian Tree: a whole Brownian path (and its Levy areas) from one key.

Jelincic, Foster & Kidger, "Single-seed generation of Brownian paths and integrals for adaptive and
high order SDE solvers" (2024); the tree goes back to Gaines & Lyons (1997) and Li et al. (2020).

The interval :math:`[t_0, t_1]` is halved :math:`J = \lceil \log_2((t_1 - t_0)/\mathrm{tol}) \rceil`
times. Each node knows :math:`(W, H, K)` over its interval and splits it with the exact midpoint
bridge (:mod:`._bridge`) using randomness drawn from the node's own key; a child's key is
``fold_in(parent_key, 0 or 1)``. A query :math:`[s, t]` walks down from the root along the paths to
``s`` and to ``t``. Where they part, at a node with midpoint :math:`b`, the answer becomes
:math:`[s, b] \oplus [b, t]`; each half is collected on the way down as the siblings passed over
(joined by Chen's relation, :mod:`._increment`) plus the piece of the leaf cut at ``s`` (resp. ``t``)
by the exact bridge at a general point. When ``s`` and ``t`` share a leaf, the leaf is cut twice.

Properties: no state and no cache; memory O(1); work O(J) per query; the same key gives the same path
whatever the order of the queries; queries at least ``tol`` apart have exactly the law of Brownian
motion (with its Levy areas). Refining ``tol`` keeps the coarse nodes, so a path drawn at ``tol``
stays put when ``tol`` is halved: only the detail inside the old leaves is new.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import check_range, concrete_value, is_concrete
from ._bridge import split
from ._increment import BrownianIncrement, from_moments, join, levy_dim, to_moments

__all__ = ["BrownianTree"]

_ROOT, _LEAF_FIRST, _LEAF_SECOND = 2, 3, 4  # fold_in tags beside the child tags 0 and 1


def _as_shape(shape) -> tuple[int, ...]:
    if isinstance(shape, (int, np.integer)):
        shape = (shape,)
    try:
        out = tuple(int(n) for n in shape)
    except TypeError:
        raise ValueError(f"shape must be a tuple of non-negative ints, got {shape!r}") from None
    if any(n < 0 for n in out) or any(float(n) != float(m) for n, m in zip(out, shape)):
        raise ValueError(f"shape must be a tuple of non-negative ints, got {shape!r}")
    return out


def _as_key(key):
    if isinstance(key, (int, np.integer)):
        raise ValueError(
            f"key must be a jax.random key (e.g. jax.random.key({key})), got the int {key!r}"
        )
    key = jnp.asarray(key) if not hasattr(key, "dtype") else key
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise ValueError(f"key must be a single key (shape ()), got shape {key.shape}")
        return key
    if key.dtype == jnp.uint32 and key.shape == (2,):
        return jax.random.wrap_key_data(key)
    raise ValueError(
        f"key must be a jax.random key, got an array of dtype {key.dtype} and shape {key.shape}"
    )


@jax.tree_util.register_pytree_node_class
class BrownianTree:
    r"""A Brownian motion on :math:`[t_0, t_1]` that can be queried at any times, from one key.

    Args:
        t0, t1: the interval, ``t0 < t1``.
        tol: the finest spacing at which queries are exact in law; ``0 < tol <= t1 - t0``. The tree
            has depth :math:`\lceil\log_2((t_1 - t_0)/\mathrm{tol})\rceil`; the depth is a traced
            value, so changing ``tol`` does not recompile.
        shape: shape of the Brownian motion (``()`` for a scalar one).
        key: a ``jax.random`` key; it alone determines the path.
        levy_area: ``None`` (W only), ``"space-time"`` (W and H) or ``"space-time-time"``
            (W, H and K).

    In float32, times are resolved to about :math:`10^{-7} |t|`, so keep ``tol`` well above that or
    turn on float64 with :func:`solverlab.setup`.

    Example:
        >>> bm = BrownianTree(0.0, 1.0, 1e-3, (), jax.random.key(0), levy_area="space-time")
        >>> inc = bm.evaluate(0.25, 0.5)   # inc.W ~ N(0, 0.25), inc.H ~ N(0, 0.25 / 12)
    """

    _leaves = ("t0", "t1", "tol", "depth", "key")

    def __init__(self, t0, t1, tol, shape: Sequence[int] | int = (), key=None, levy_area=None):
        if key is None:
            raise ValueError("key must be a jax.random key (e.g. jax.random.key(0)), got None")
        levy_dim(levy_area)
        shape = _as_shape(shape)
        check_range("t0", t0)
        check_range("t1", t1)
        c0, c1 = concrete_value(t0), concrete_value(t1)
        for name, val in (("t0", c0), ("t1", c1), ("tol", concrete_value(tol))):
            if val is not None and val.shape != ():
                raise ValueError(f"{name} must be a scalar, got shape {val.shape}")
        if c0 is not None and c1 is not None and not c1 > c0:
            raise ValueError(f"t1 must be greater than t0 = {float(c0):g}, got t1 = {float(c1):g}")
        high = None if c0 is None or c1 is None else float(c1 - c0)
        check_range("tol", tol, low=0.0, low_open=True, high=high)
        dtype = jnp.result_type(float)
        t0a, t1a, tola = (jnp.asarray(x, dtype) for x in (t0, t1, tol))
        if is_concrete((t0, t1, tol)):
            ratio = (float(np.asarray(t1)) - float(np.asarray(t0))) / float(np.asarray(tol))
            depth = max(0, math.ceil(math.log2(ratio) - 1e-9))
            depth = jnp.asarray(depth, jnp.int32)
        else:  # traced: same formula inside the trace
            depth = jnp.maximum(jnp.ceil(jnp.log2((t1a - t0a) / tola) - 1e-9), 0).astype(jnp.int32)
        self.t0, self.t1, self.tol, self.depth = t0a, t1a, tola, depth
        self.key = _as_key(key)
        self.shape = shape
        self.levy_area = levy_area

    # A pytree: arrays are leaves (traced under jit), shape and levy_area are static.
    def tree_flatten(self):
        return tuple(getattr(self, n) for n in self._leaves), (self.shape, self.levy_area)

    @classmethod
    def tree_unflatten(cls, aux, children):
        obj = object.__new__(cls)  # no validation: the leaves may be tracers
        for name, value in zip(cls._leaves, children):
            setattr(obj, name, value)
        obj.shape, obj.levy_area = aux
        return obj

    def __repr__(self):
        return (
            f"BrownianTree(t0={self.t0}, t1={self.t1}, tol={self.tol}, shape={self.shape}, "
            f"levy_area={self.levy_area!r}, depth={self.depth})"
        )

    @property
    def dim(self) -> int:
        """How many of (W, H, K) each query returns."""
        return levy_dim(self.levy_area)

    @property
    def leaf_length(self) -> jax.Array:
        """Length of the leaves, ``(t1 - t0) / 2**depth <= tol``."""
        return (self.t1 - self.t0) / jnp.exp2(self.depth.astype(self.t0.dtype))

    def evaluate(self, s, t=None) -> BrownianIncrement:
        r"""The increment over :math:`[s, t]` (or :math:`[t_0, s]` when ``t`` is None).

        Args:
            s, t: times with ``t0 <= s <= t <= t1``; scalars or arrays that broadcast together.

        Returns:
            :class:`BrownianIncrement` with ``W`` (and ``H``, ``K`` as asked) of shape
            ``broadcast(s, t).shape + self.shape``. Concrete out-of-range queries raise
            ``ValueError``; traced ones return NaN.
        """
        if t is None:
            s, t = self.t0, s
        self._check_query(s, t)
        dtype = self.t0.dtype
        s, t = jnp.broadcast_arrays(jnp.asarray(s, dtype), jnp.asarray(t, dtype))
        batch = s.shape
        flat = jax.vmap(self._query)(s.reshape(-1), t.reshape(-1))
        return jax.tree_util.tree_map(lambda x: x.reshape(batch + x.shape[1:]), flat)

    def __call__(self, s, t=None) -> BrownianIncrement:
        return self.evaluate(s, t)

    def _check_query(self, s, t) -> None:
        cs, ct = concrete_value(s), concrete_value(t)
        lo = concrete_value(self.t0)
        hi = concrete_value(self.t1)
        if lo is None or hi is None:
            return
        check_range("s", s, low=float(lo), high=float(hi))
        check_range("t", t, low=float(lo), high=float(hi))
        if cs is not None and ct is not None:
            try:
                bs, bt = np.broadcast_arrays(cs, ct)
            except ValueError:
                raise ValueError(
                    f"s and t must broadcast together, got shapes {cs.shape} and {ct.shape}"
                ) from None
            if np.any(bs > bt):
                i = np.argmax((bs > bt).ravel())
                raise ValueError(
                    f"s must be <= t, got s = {bs.ravel()[i]:g} > t = {bt.ravel()[i]:g}"
                )

    def _noise(self, key):
        return jax.random.normal(key, (self.dim,) + self.shape, self.t0.dtype)

    def _query(self, s, t):
        """One query on scalar times: both root-to-leaf walks in one loop over the levels."""
        d, dtype = self.dim, self.t0.dtype
        span = self.t1 - self.t0
        scale = jnp.asarray([1.0, 1.0 / math.sqrt(12.0), 1.0 / math.sqrt(720.0)][:d], dtype)
        root_key, node_key = jax.random.split(self.key)
        root = jnp.sqrt(span) * scale.reshape((d,) + (1,) * len(self.shape)) * self._noise(root_key)
        empty = jnp.zeros((d,) + self.shape, dtype)
        zero = jnp.zeros((), dtype)

        def level(i, carry):
            (parted, a_s, v_s, k_s, h_suf, m_suf, a_t, v_t, k_t, h_pre, m_pre) = carry
            h = span / jnp.exp2(i.astype(dtype))
            mid_s, mid_t = a_s + 0.5 * h, a_t + 0.5 * h
            (hl_s, ml_s), (hr_s, mr_s) = split(h, v_s, 0.5, self._noise(k_s))
            (hl_t, ml_t), (hr_t, mr_t) = split(h, v_t, 0.5, self._noise(k_t))
            s_left, t_left = s < mid_s, t < mid_t
            # After the walks have parted, the s-walk gathers right siblings (the part of the node
            # after s) and the t-walk gathers left siblings (the part before t).
            grow_suf = parted & s_left
            h_new, m_new = join(hr_s, mr_s, h_suf, m_suf)
            h_suf = jnp.where(grow_suf, h_new, h_suf)
            m_suf = jnp.where(grow_suf, m_new, m_suf)
            grow_pre = parted & ~t_left
            h_new, m_new = join(h_pre, m_pre, hl_t, ml_t)
            h_pre = jnp.where(grow_pre, h_new, h_pre)
            m_pre = jnp.where(grow_pre, m_new, m_pre)
            v_s = jnp.where(s_left, from_moments(hl_s, ml_s), from_moments(hr_s, mr_s))
            v_t = jnp.where(t_left, from_moments(hl_t, ml_t), from_moments(hr_t, mr_t))
            a_s = jnp.where(s_left, a_s, mid_s)
            a_t = jnp.where(t_left, a_t, mid_t)
            k_s = jax.random.fold_in(k_s, jnp.where(s_left, 0, 1))
            k_t = jax.random.fold_in(k_t, jnp.where(t_left, 0, 1))
            parted = parted | (s_left & ~t_left)
            return (parted, a_s, v_s, k_s, h_suf, m_suf, a_t, v_t, k_t, h_pre, m_pre)

        init = (False, self.t0, root, node_key, zero, empty, self.t0, root, node_key, zero, empty)
        carry = jax.lax.fori_loop(0, self.depth, level, init)
        (parted, a_s, v_s, k_s, h_suf, m_suf, a_t, v_t, k_t, h_pre, m_pre) = carry

        leaf = self.leaf_length
        rho_s = (s - a_s) / leaf
        rho_t = (t - a_t) / leaf
        # Cut the s-leaf at s and the t-leaf at t (the same cut whichever query asks for it).
        _, (hr_s, mr_s) = split(leaf, v_s, rho_s, self._noise(jax.random.fold_in(k_s, _LEAF_FIRST)))
        (hl_t, ml_t), _ = split(leaf, v_t, rho_t, self._noise(jax.random.fold_in(k_t, _LEAF_FIRST)))
        h_a, m_a = join(hr_s, mr_s, h_suf, m_suf)
        h_b, m_b = join(h_pre, m_pre, hl_t, ml_t)
        h_apart, m_apart = join(h_a, m_a, h_b, m_b)
        # Same leaf: cut the piece after s again at t.
        rest = from_moments(hr_s, mr_s)
        rho_inner = jnp.where(hr_s > 0, (t - s) / jnp.where(hr_s > 0, hr_s, 1.0), 0.0)
        (h_in, m_in), _ = split(
            hr_s, rest, rho_inner, self._noise(jax.random.fold_in(k_s, _LEAF_SECOND))
        )
        h_out = jnp.where(parted, h_apart, h_in)
        m_out = jnp.where(parted, m_apart, m_in)
        v = from_moments(h_out, m_out)
        valid = (self.t0 <= s) & (s <= t) & (t <= self.t1)
        v = jnp.where(valid, v, jnp.nan)
        return BrownianIncrement.from_stack(v)
