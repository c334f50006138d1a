"""Argument checks shared by the tree and the grid, and the scale of (W, H, K)."""

from __future__ import annotations

import math
import operator

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["as_shape", "as_key", "positive_int", "component_scale"]


def positive_int(name: str, value, low: int = 1) -> int:
    """``value`` as an int >= ``low`` (NumPy ints welcome; bools and floats refused)."""
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    try:
        out = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}") from None
    if out < low:
        raise ValueError(f"{name} must be an int >= {low}, got {out}")
    return out


def component_scale(d: int, dtype):
    """Standard deviations of (W, H, K)[:d] over a unit interval: 1, 1/sqrt(12), 1/sqrt(720)."""
    return jnp.asarray([1.0, 1.0 / math.sqrt(12.0), 1.0 / math.sqrt(720.0)][:d], dtype)


def as_shape(shape) -> tuple[int, ...]:
    if isinstance(shape, (int, np.integer)):
        shape = (shape,)
    if isinstance(shape, (str, bytes)):
        raise ValueError(f"shape must be a tuple of non-negative ints, got {shape!r}")
    try:
        out = tuple(positive_int("shape", n, low=0) for n in shape)
    except (TypeError, ValueError):
        raise ValueError(f"shape must be a tuple of non-negative ints, got {shape!r}") from None
    return out


def as_key(key):
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
