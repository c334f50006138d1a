r"""The Virtual Brownian Tree: a whole Brownian path (and its Levy areas) from one key.

Jelincic, Foster & Kidger, "Single-seed generation of Brownian paths and integrals for adaptive and
high order SDE solvers" (2024); the tree goes back to Gaines & Lyons (1997) and Li et al. (2020).

The interval :math:`[t_0, t_1]` is halved :math:`J = \lceil \log_2((t_1 - t_0)/\mathrm{tol}) \rceil`
times. Each node knows :math:`(W, H, K)` over its interval and splits it with the exact midpoint
bridge (:mod:`._bridge`). Randomness is counter-based: the node at level :math:`l` and position
:math:`p` draws its normals from the bits of ``fold_in(fold_in(key_mid, l), p)`` (a 64-bit position
is folded in as two 32-bit words below level 32), so no key chain is carried down. A query :math:`[s, t]` walks down from the root along the paths to
``s`` and to ``t``. Where they part, at a node with midpoint :math:`b`, the answer becomes
:math:`[s, b] \oplus [b, t]`; each half is collected on the way down as the siblings passed over
(joined by Chen's relation, :mod:`._increment`) plus the piece of the leaf cut at ``s`` (resp. ``t``)
by the exact bridge at a general point, with one noise draw per leaf. When ``s`` and ``t`` share a
leaf, :math:`[s, t]` is the leaf's piece up to ``t`` less its piece up to ``s``.

Properties: no state and no cache; memory O(1); work O(J) per query; the same key gives the same path
whatever the order of the queries. Every query is a difference of one cumulative functional
:math:`\tau \mapsto (W, H, K)_{t_0, \tau}`, so the path is a single function of time, continuous
inside the leaves: increments add up and Chen's relation holds for any query times, to float
precision. Queries at least ``tol`` apart (at most one per leaf) have exactly the joint law of
Brownian motion with its Levy areas. Two queries inside one leaf share its one draw: ``W`` is then the
bridge's smooth interpolation (too little variance), and ``H`` and ``K`` of a sub-leaf interval are
not even the areas of that interpolated path (their size stays of order :math:`\sqrt{\mathrm{tol}}`
however short the interval); Diffrax's default leaf interpolation behaves alike. So choose
``tol`` at most the smallest step (:func:`solverlab.sde.solve` refuses a coarser tree). Refining ``tol`` keeps the coarse nodes,
so a path drawn at ``tol`` stays put when ``tol`` is halved: only the detail inside old leaves is new.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import check_range, concrete_value
from ._bridge import split, split_midpoint
from ._args import as_key, as_shape, component_scale
from ._increment import BrownianIncrement, from_moments, join, levy_dim, remove_left, to_moments

__all__ = ["BrownianTree"]

@jax.tree_util.register_pytree_node_class
class BrownianTree:
    r"""A Brownian motion on :math:`[t_0, t_1]` that can be queried at any times, from one key.

    Args:
        t0, t1: the interval, ``t0 < t1``.
        tol: the finest spacing at which queries are exact in law,
            ``(t1 - t0) * 2**-62 <= tol <= t1 - t0``. The tree
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
        shape = as_shape(shape)
        check_range("t0", t0)
        check_range("t1", t1)
        c0, c1 = concrete_value(t0), concrete_value(t1)
        for name, val in (("t0", c0), ("t1", c1), ("tol", concrete_value(tol))):
            if val is not None and val.shape != ():
                raise ValueError(f"{name} must be a scalar, got shape {val.shape}")
        # Checks and depth in the tree's own dtype, so eager and jit build the same tree.
        dtype = jnp.result_type(float)
        np_dtype = np.dtype(dtype)
        if c0 is not None and c1 is not None:
            c0, c1 = np_dtype.type(c0), np_dtype.type(c1)
            if not c1 > c0:
                raise ValueError(f"t1 must be greater than t0 = {float(c0):g}, got t1 = {float(c1):g}")
        span = None if c0 is None or c1 is None else c1 - c0
        ctol = concrete_value(tol)
        if ctol is not None and span is not None and np.isfinite(ctol):
            ctol = np_dtype.type(ctol)
            # Node positions are 64-bit integers: at most _MAX_DEPTH levels.
            low = float(np.ldexp(span, -_MAX_DEPTH))
            if not low <= ctol <= span:
                raise ValueError(
                    f"tol must lie in [{low:.6g}, {float(span):.7g}] (t1 - t0 = {float(span):.7g} "
                    f"and at most {_MAX_DEPTH} halvings), got {float(ctol):.7g}"
                )
        else:
            check_range("tol", tol, low=0.0, low_open=True)
        t0a, t1a, tola = (jnp.asarray(x, dtype) for x in (t0, t1, tol))
        if span is not None and ctol is not None:
            depth = jnp.asarray(_depth(np, span, ctol), jnp.int32)
        else:  # traced: the same integer formula inside the trace
            depth = _depth(jnp, t1a - t0a, tola)
        self.t0, self.t1, self.tol, self.depth = t0a, t1a, tola, depth
        self.key = as_key(key)
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
        return jnp.ldexp(self.t1 - self.t0, -self.depth)  # exact power of two (exp2 is not)

    def evaluate(self, s, t=None) -> BrownianIncrement:
        r"""The increment over :math:`[s, t]` (or :math:`[t_0, s]` when ``t`` is None).

        Args:
            s, t: times with ``t0 <= s <= t <= t1``; scalars or arrays that broadcast together.

        Returns:
            :class:`BrownianIncrement` with ``W`` (and ``H``, ``K`` as asked) of shape
            ``broadcast(s, t).shape + self.shape``. Concrete out-of-range queries raise
            ``ValueError``; traced ones (and trees built from bad traced ``t0``, ``t1``, ``tol``)
            return NaN.
        """
        if t is None:
            s, t = self.t0, s
        self._check_query(s, t)
        dtype = self.t0.dtype
        s, t = jnp.broadcast_arrays(jnp.asarray(s, dtype), jnp.asarray(t, dtype))
        batch = s.shape
        flat = _evaluate_flat(self, s.reshape(-1), t.reshape(-1))
        return jax.tree_util.tree_map(lambda x: x.reshape(batch + x.shape[1:]), flat)

    def __call__(self, s, t=None) -> BrownianIncrement:
        return self.evaluate(s, t)

    def _check_query(self, s, t) -> None:
        cs, ct = concrete_value(s), concrete_value(t)
        lo = concrete_value(self.t0)
        hi = concrete_value(self.t1)
        if lo is None or hi is None:
            return
        # Compare in the tree's dtype: t0 = 0.1 given in float64 must match the float32 t0.
        dtype = np.dtype(self.t0.dtype)
        if cs is not None:
            cs = cs.astype(dtype) if np.issubdtype(cs.dtype, np.number) else cs
            check_range("s", cs, low=float(lo), high=float(hi))
        if ct is not None:
            ct = ct.astype(dtype) if np.issubdtype(ct.dtype, np.number) else ct
            check_range("t", ct, low=float(lo), high=float(hi))
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

    def _noise(self, level_key, hi, lo, deep: bool):
        """Standard normals for the node at (level, position), position = hi * 2**32 + lo."""
        k = jax.random.fold_in(level_key, hi) if deep else level_key
        return _normals(jax.random.fold_in(k, lo), (self.dim,) + self.shape, self.t0.dtype)

    def _query(self, s, t):
        """One query on scalar times: both root-to-leaf walks in one loop over the levels."""
        d, dtype = self.dim, self.t0.dtype
        span = self.t1 - self.t0
        scale = component_scale(d, dtype)
        root_key, mid_key, cut_key = jax.random.split(self.key, 3)
        shape = (d,) + self.shape
        root = jnp.sqrt(span) * scale.reshape((d,) + (1,) * len(self.shape))
        root = root * jax.random.normal(root_key, shape, dtype)
        empty = jnp.zeros(shape, dtype)
        zero = jnp.zeros((), dtype)
        u0 = jnp.zeros((), jnp.uint32)

        def level(i, carry, deep):
            (parted, a_s, v_s, hi_s, lo_s, h_suf, m_suf, a_t, v_t, hi_t, lo_t, h_pre, m_pre) = carry
            h = jnp.ldexp(span, -i)
            mid_s, mid_t = a_s + 0.5 * h, a_t + 0.5 * h
            lkey = jax.random.fold_in(mid_key, i)
            even_s, odd_s = split_midpoint(h, v_s, self._noise(lkey, hi_s, lo_s, deep))
            even_t, odd_t = split_midpoint(h, v_t, self._noise(lkey, hi_t, lo_t, deep))
            s_left, t_left = s < mid_s, t < mid_t
            half = 0.5 * h
            # After the walks have parted, the s-walk gathers right siblings (the part of the node
            # after s) and the t-walk gathers left siblings (the part before t).
            grow_suf = parted & s_left
            h_new, m_new = join(half, to_moments(half, even_s - odd_s), h_suf, m_suf)
            h_suf = jnp.where(grow_suf, h_new, h_suf)
            m_suf = jnp.where(grow_suf, m_new, m_suf)
            grow_pre = parted & ~t_left
            h_new, m_new = join(h_pre, m_pre, half, to_moments(half, even_t + odd_t))
            h_pre = jnp.where(grow_pre, h_new, h_pre)
            m_pre = jnp.where(grow_pre, m_new, m_pre)
            v_s = even_s + jnp.where(s_left, odd_s, -odd_s)
            v_t = even_t + jnp.where(t_left, odd_t, -odd_t)
            a_s = jnp.where(s_left, a_s, mid_s)
            a_t = jnp.where(t_left, a_t, mid_t)
            hi_s, lo_s = _child(hi_s, lo_s, ~s_left)
            hi_t, lo_t = _child(hi_t, lo_t, ~t_left)
            parted = parted | (s_left & ~t_left)
            return (parted, a_s, v_s, hi_s, lo_s, h_suf, m_suf, a_t, v_t, hi_t, lo_t, h_pre, m_pre)

        init = (False, self.t0, root, u0, u0, zero, empty, self.t0, root, u0, u0, zero, empty)
        # Positions below level 32 fit in one uint32; deeper levels fold in the high word too.
        shallow = jnp.minimum(self.depth, _WORD)
        carry = jax.lax.fori_loop(0, shallow, lambda i, c: level(i, c, False), init)
        carry = jax.lax.fori_loop(_WORD, self.depth, lambda i, c: level(i, c, True), carry)
        (parted, a_s, v_s, hi_s, lo_s, h_suf, m_suf, a_t, v_t, hi_t, lo_t, h_pre, m_pre) = carry

        leaf = self.leaf_length
        deep = self.depth > _WORD
        cut = jax.random.fold_in(cut_key, self.depth)

        def leaf_noise(key, hi, lo):
            return jnp.where(deep, self._noise(key, hi, lo, True), self._noise(key, hi, lo, False))

        # Cut the s-leaf at s and the t-leaf at t (the same cut whichever query asks for it).
        (hl_s, ml_s), (hr_s, mr_s) = split(leaf, v_s, (s - a_s) / leaf, leaf_noise(cut, hi_s, lo_s))
        (hl_t, ml_t), _ = split(leaf, v_t, (t - a_t) / leaf, leaf_noise(cut, hi_t, lo_t))
        h_a, m_a = join(hr_s, mr_s, h_suf, m_suf)
        h_b, m_b = join(h_pre, m_pre, hl_t, ml_t)
        h_apart, m_apart = join(h_a, m_a, h_b, m_b)
        # Same leaf: [s, t] = [a, t] minus [a, s], both from the leaf's one cut.
        h_in, m_in = remove_left(hl_t, ml_t, hl_s, ml_s)
        h_out = jnp.where(parted, h_apart, h_in)
        m_out = jnp.where(parted, m_apart, m_in)
        v = from_moments(h_out, m_out)
        # Traced arguments are not checked at construction: bad ones give NaN, never garbage.
        valid = (self.t0 <= s) & (s <= t) & (t <= self.t1)
        valid &= (self.t0 < self.t1) & (self.tol >= span * 2.0**-_MAX_DEPTH) & (self.tol <= span)
        v = jnp.where(valid, v, jnp.nan)
        return BrownianIncrement.from_stack(v)


_WORD = 32
_MAX_DEPTH = 62


@jax.jit
def _evaluate_flat(tree: BrownianTree, s, t):
    """Compiled once per (shape, levy_area, dtype, number of queries); trees are traced arguments."""
    return jax.vmap(tree._query)(s, t)


def _depth(xp, span, tol):
    r"""Smallest :math:`J \ge 0` with :math:`\mathrm{span}/2^J \le \mathrm{tol}`, exactly, from the binary
    exponents: with :math:`x = m\,2^e`, :math:`m \in [1/2, 1)`,
    :math:`J = e_{\mathrm{span}} - e_{\mathrm{tol}} + [m_{\mathrm{span}} > m_{\mathrm{tol}}]`."""
    m_span, e_span = xp.frexp(span)
    m_tol, e_tol = xp.frexp(tol)
    levels = e_span - e_tol + (m_span > m_tol).astype(e_span.dtype if hasattr(e_span, "dtype") else int)
    return xp.clip(levels, 0, _MAX_DEPTH).astype(xp.int32)


def _child(hi, lo, right):
    """Position of the child (0: left, 1: right) as a 64-bit integer kept in two uint32 words."""
    hi = (hi << 1) | (lo >> 31)
    lo = (lo << 1) | right.astype(jnp.uint32)
    return hi, lo


def _normals(key, shape, dtype):
    """Standard normals from the bits of one hashed key (counter-based: no key chain to carry).

    The 64 bits of a threefry key are enough for two float32 normals; more are drawn when needed.
    """
    n = math.prod(shape)
    words_each = 2 if jnp.dtype(dtype).itemsize == 8 else 1
    data = jax.random.key_data(key).reshape(-1)
    if data.dtype != jnp.uint32 or data.shape[0] < n * words_each:
        return jax.random.normal(key, shape, dtype)
    bits = data[: n * words_each]
    if words_each == 1:
        mant = (bits >> 9) | jnp.uint32(0x3F800000)
        unit = jax.lax.bitcast_convert_type(mant, jnp.float32) - 1.0
    else:
        pairs = bits.reshape(n, 2).astype(jnp.uint64)
        mant = (((pairs[:, 0] << 32) | pairs[:, 1]) >> 12) | jnp.uint64(0x3FF0000000000000)
        unit = jax.lax.bitcast_convert_type(mant, jnp.float64) - 1.0
    lo = jnp.nextafter(jnp.asarray(-1.0, unit.dtype), jnp.asarray(0.0, unit.dtype))
    u = jnp.maximum(2.0 * unit - 1.0, lo)
    return (math.sqrt(2.0) * jax.lax.erf_inv(u)).reshape(shape).astype(dtype)
