r"""Boundary checks shared by the Langevin samplers, the result they return, and split :math:`\hat R`.

Validation happens before anything is traced (``ValueError`` naming the parameter, the value and the
allowed range). What goes wrong inside a run (a log-density or gradient that turns NaN, a chain that
blows up) is recorded per chain as the first bad step and raised afterwards as
:class:`~solverlab.SolverError`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from ..brownian._args import as_key
from ..brownian._args import positive_int
from ..errors import SolverError, check_range, concrete_value

__all__ = ["Samples", "rhat"]


def positive(name: str, value) -> None:
    """``ValueError`` unless a concrete ``value`` is a finite real number > 0 (traced: unchecked)."""
    arr = concrete_value(value)
    if arr is not None and arr.shape != ():
        raise ValueError(f"{name} must be a scalar, got shape {arr.shape}")
    check_range(name, value, low=0.0, low_open=True)


def count(name: str, value, low: int) -> int:
    """``value`` as an int >= ``low`` (static: it sets array shapes and loop lengths)."""
    return positive_int(name, value, low=low)


def schedule(n_steps, warmup, thin) -> tuple[int, int, int]:
    """``(n_steps, warmup, thin)`` checked; ``thin`` must divide ``n_steps``."""
    n_steps = count("n_steps", n_steps, 1)
    warmup = count("warmup", warmup, 0)
    thin = count("thin", thin, 1)
    if n_steps % thin:
        raise ValueError(f"thin must divide n_steps = {n_steps}, got thin = {thin}")
    return n_steps, warmup, thin


def key_of(key):
    if key is None:
        raise ValueError("key must be a jax.random key (e.g. jax.random.key(0)), got None")
    return as_key(key)


def positions(name: str, x0):
    """``x0`` as a float array of shape ``(d,)`` (one chain) or ``(n_chains, d)``; ``(x, batched)``."""
    try:
        x = jnp.asarray(x0)
    except TypeError:
        raise ValueError(f"{name} must be an array of shape (d,) or (n_chains, d), got {x0!r}") from None
    if not (jnp.issubdtype(x.dtype, jnp.number) and not jnp.issubdtype(x.dtype, jnp.complexfloating)):
        raise ValueError(f"{name} must be real, got dtype {x.dtype}")
    if x.ndim not in (1, 2) or x.shape[-1] == 0 or (x.ndim == 2 and x.shape[0] == 0):
        raise ValueError(f"{name} must have shape (d,) or (n_chains, d), got shape {x.shape}")
    x = x.astype(jnp.result_type(float))
    c = concrete_value(x)
    if c is not None and not np.all(np.isfinite(c)):
        raise ValueError(f"{name} must be finite, got {x0!r}")
    return (x if x.ndim == 2 else x[None]), x.ndim == 2


def log_density_fn(log_density, x_one) -> None:
    """``ValueError`` unless ``log_density`` maps one chain's position ``(d,)`` to a real scalar.

    Checked abstractly (``jax.eval_shape``): nothing is evaluated or compiled.
    """
    if not callable(log_density):
        raise ValueError(f"log_density must be a function x -> log density (x of shape (d,)), got {log_density!r}")
    spec = jax.ShapeDtypeStruct(x_one.shape, x_one.dtype)
    try:
        out = jax.eval_shape(log_density, spec)
    except Exception as err:  # the user's function failed on a (d,)-shaped input
        raise ValueError(
            f"log_density failed on one chain's position of shape {x_one.shape}: {type(err).__name__}: {err}"
        ) from None
    if not isinstance(out, jax.ShapeDtypeStruct) or out.shape != ():
        shape = getattr(out, "shape", type(out).__name__)
        raise ValueError(
            f"log_density must return a scalar for one chain's position of shape {x_one.shape}, "
            f"got shape {shape}"
        )
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise ValueError(f"log_density must return a real float, got dtype {out.dtype}")


def first_bad(bad, k, ok):
    """Record step ``k`` as the first bad one when ``ok`` fails and nothing was recorded yet (-1)."""
    return jnp.where((bad < 0) & ~ok, k, bad).astype(bad.dtype)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Samples:
    """What a sampler returns (one row per chain; the chain axis is dropped for a single ``x0`` of shape ``(d,)``).

    Attributes:
        positions: kept positions, ``(n_chains, n_steps // thin, d)``: every ``thin``-th step after
            ``warmup`` discarded steps.
        x, v: the last state (``v`` is ``None`` for overdamped samplers), ``(n_chains, d)``; pass it
            back as ``x0``/``v0`` to continue.
        acceptance_rate: fraction of accepted proposals after warm-up (MALA), 1 for unadjusted ones.
        grad_evals: gradient evaluations per chain, counted exactly (warm-up included).
        bad_step: per chain, the first step (0: the starting point) at which the log-density or its
            gradient was NaN, or the state stopped being finite; -1 when none.
    """

    positions: jax.Array
    x: jax.Array
    v: jax.Array | None
    acceptance_rate: jax.Array
    grad_evals: jax.Array
    bad_step: jax.Array

    def raise_for_result(self, hint: str = "reduce step") -> "Samples":
        """Raise :class:`~solverlab.SolverError` when some chain went bad (concrete results only)."""
        bad = concrete_value(self.bad_step)
        if bad is None:
            return self
        bad = np.atleast_1d(bad)
        if np.any(bad >= 0):
            chains = np.flatnonzero(bad >= 0)
            c = int(chains[0])
            where = "at the starting point" if bad[c] == 0 else f"at step {int(bad[c])}"
            raise SolverError(
                f"chain {c} ({len(chains)} of {bad.size} chains) went bad {where}: the log-density or "
                f"its gradient was NaN (or the state overflowed); {hint}, or check log_density there"
            )
        return self


def finish(samples: Samples, batched: bool, check: bool, hint: str) -> Samples:
    if not batched:
        samples = jax.tree_util.tree_map(lambda a: a[0], samples)
    return samples.raise_for_result(hint) if check else samples


def rhat(samples) -> np.ndarray:
    r"""Split :math:`\hat R` (Gelman et al., *Bayesian Data Analysis*, 3rd ed., section 11.4), per coordinate.

    Each of the :math:`m` chains of length :math:`2n` is split in half (so :math:`2m` chains of
    length :math:`n`); with :math:`B` = :math:`n` times the variance of the chain means and :math:`W`
    the mean within-chain variance,

    .. math::
        \hat R = \sqrt{\frac{\tfrac{n-1}{n} W + \tfrac1n B}{W}} .

    Args:
        samples: ``(n_chains, n_draws)`` or ``(n_chains, n_draws, d)``, ``n_chains >= 1``, ``n_draws >= 4``.

    Returns:
        ``()`` or ``(d,)``: values near 1 (say below 1.01 to 1.05) mean the chains agree.
    """
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim not in (2, 3) or x.shape[1] < 4:
        raise ValueError(f"samples must have shape (n_chains, n_draws >= 4[, d]), got {x.shape}")
    n = x.shape[1] // 2
    halves = np.concatenate([x[:, :n], x[:, n : 2 * n]], axis=0)
    means = halves.mean(axis=1)
    b = n * means.var(axis=0, ddof=1)
    w = halves.var(axis=1, ddof=1).mean(axis=0)
    return np.sqrt(((n - 1) / n * w + b / n) / w)
