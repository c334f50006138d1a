"""Errors and argument checks shared by every solver.

Validation happens at the Python boundary, before anything is traced: a bad concrete value raises
``ValueError`` naming the parameter, the value and the allowed range. Divergence inside a solve is
reported by a result code and raised by the high-level call as :class:`SolverError`.
"""

from __future__ import annotations

import numbers

import jax
import numpy as np

__all__ = ["SolverError", "is_concrete", "concrete_value", "check_range"]


class SolverError(RuntimeError):
    """A solve that ran but did not succeed (NaN, CFL violation, max steps, step-size underflow).

    The message says what happened and what to try.
    """


def is_concrete(x) -> bool:
    """True when ``x`` holds a known value now (not a tracer inside ``jit``/``vmap``/``grad``)."""
    leaves = jax.tree_util.tree_leaves(x)
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in leaves)


def concrete_value(x):
    """``x`` as a NumPy array when it is concrete, else ``None`` (a traced value is checked later)."""
    if x is None or not is_concrete(x):
        return None
    return np.asarray(x)


def check_range(name: str, value, *, low=None, high=None, low_open=False, high_open=False) -> None:
    """Raise ``ValueError`` unless every entry of a concrete ``value`` lies in the stated interval.

    Traced values pass through unchecked; the caller documents what happens to them.
    """
    arr = concrete_value(value)
    if arr is None:
        return
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {_show(value)}")
    bad = np.zeros(arr.shape, dtype=bool)
    if low is not None:
        bad |= (arr <= low) if low_open else (arr < low)
    if high is not None:
        bad |= (arr >= high) if high_open else (arr > high)
    if np.any(bad):
        left = "(" if low_open or low is None else "["
        right = ")" if high_open or high is None else "]"
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        shown = _show(arr[bad].ravel()[0] if arr.ndim else arr)
        raise ValueError(f"{name} must lie in {left}{lo}, {hi}{right}, got {shown}")


def _show(value) -> str:
    if isinstance(value, numbers.Number) or np.ndim(value) == 0:
        return f"{float(value):g}"
    return repr(value)
