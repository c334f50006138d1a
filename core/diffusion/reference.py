r"""A reference solution of the probability-flow ODE: adaptive Dormand-Prince 5(4) to a tight tolerance.

In the EDM variables :math:`\tilde x = x/\alpha` and :math:`\tilde\sigma = \sigma/\alpha = e^{-\lambda}`
the probability-flow ODE is :math:`d\tilde x/d\tilde\sigma = \hat\epsilon` (Karras et al. 2022).
With :math:`u = \log\tilde\sigma = -\lambda` it becomes

.. math::
    \frac{d\tilde x}{du} = \tilde\sigma\,\hat\epsilon\big(\alpha\tilde x,\ t(\lambda = -u)\big),

whose scale is even across noise levels, so an adaptive explicit Runge-Kutta method takes steps of
similar length in :math:`u` from start to end. Dormand & Prince (1980), the RK5(4)7M pair (FSAL),
with the standard PI step control (Hairer, Norsett & Wanner, *Solving ODEs I*, II.4). One step
size serves the whole batch (RMS error over every sample), so every sample sees the same grid.
The last step to noise level zero is the data prediction, as in :mod:`.samplers`.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..errors import SolverError, check_range, concrete_value
from .samplers import checked_problem

__all__ = ["ReferenceSolution", "reference"]

# Dormand-Prince 5(4): nodes c, stages a, 5th-order weights b, and b - b* for the error estimate.
_C = np.array([0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0])
_A = [
    [],
    [1 / 5],
    [3 / 40, 9 / 40],
    [44 / 45, -56 / 15, 32 / 9],
    [19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729],
    [9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656],
    [35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84],
]
_B = np.array([35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0])
_E = _B - np.array([5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40])


class ReferenceSolution(NamedTuple):
    """``x0``: the samples at noise level zero; ``n_steps``, ``nfe``: accepted steps and model
    evaluations; ``success``: False when ``max_steps`` ran out before ``t_end``."""

    x0: jax.Array
    n_steps: jax.Array
    nfe: jax.Array
    success: jax.Array


def reference(model_fn: Callable, x_T, schedule, *, rtol: float = 1e-7, atol: float = 1e-7, t_start=None,
              t_end=None, max_steps: int = 10_000, check: bool = True) -> ReferenceSolution:
    r"""Solve the probability-flow ODE from ``x_T`` at ``t_start`` to noise level zero, adaptively.

    Args:
        model_fn, x_T, schedule, t_start, t_end: as :func:`solverlab.diffusion.sample`.
        rtol, atol: tolerances of the error estimate in :math:`\tilde x` (RMS over the batch).
        max_steps: the most accepted plus rejected steps.
        check: raise :class:`~solverlab.SolverError` when the solve failed (outside jit).
    """
    check_range("rtol", rtol, low=0.0, low_open=True)
    check_range("atol", atol, low=0.0, low_open=True)
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"max_steps must be an int >= 1, got {max_steps!r}")
    x_T, t_start, t_end = checked_problem(model_fn, x_T, schedule, t_start, t_end)
    dtype = x_T.dtype
    out = _reference(model_fn, x_T, schedule, t_start, t_end, jnp.asarray(rtol, dtype), jnp.asarray(atol, dtype),
                     max_steps=max_steps)
    if check and concrete_value(out.success) is not None:
        if not bool(jnp.all(jnp.isfinite(out.x0))):
            raise SolverError("the reference solve produced NaN or infinite samples (is model_fn finite?)")
        if not bool(out.success):
            raise SolverError(f"the reference solve needed more than max_steps = {max_steps} steps; "
                              "raise max_steps or loosen rtol/atol")
    return out


@eqx.filter_jit  # models holding arrays are traced (see samplers._sample)
def _reference(model_fn, x, schedule, t_start, t_end, rtol, atol, *, max_steps):
    def field(u, xs):  # d x~ / du at u = log sigma~
        t = schedule.t_of_lambda(-u)
        return jnp.exp(u) * model_fn(schedule.alpha(t) * xs, t)

    u0, u1 = -schedule.lambda_(t_start), -schedule.lambda_(t_end)  # u decreases: u1 < u0
    xs = x / schedule.alpha(t_start)
    span = u1 - u0

    def rk_step(u, xs, k0, h):
        ks = [k0]
        for i in range(1, 7):
            incr = sum(a * k for a, k in zip(_A[i], ks))
            ks.append(field(u + _C[i] * h, xs + h * incr))
        new = xs + h * sum(b * k for b, k in zip(_B, ks) if b != 0.0)
        err = h * sum(e * k for e, k in zip(_E, ks) if e != 0.0)
        scale = atol + rtol * jnp.maximum(jnp.abs(xs), jnp.abs(new))
        return new, ks[-1], jnp.sqrt(jnp.mean((err / scale) ** 2))

    def cond(state):
        u, _, _, h, steps, _, _ = state
        return ((u - u1) * jnp.sign(-span) > 1e-12 * jnp.abs(span)) & (steps < max_steps)

    def body(state):
        u, xs, k0, h, steps, accepted, prev_err = state
        h = jnp.sign(span) * jnp.minimum(jnp.abs(h), jnp.abs(u1 - u))  # land on u1 exactly
        new, k_new, err = rk_step(u, xs, k0, h)
        ok = err <= 1.0
        err = jnp.maximum(err, 1e-10)
        # PI control (beta1 = 0.7/5, beta2 = 0.4/5), safety 0.9, factor in [0.2, 5].
        factor = jnp.clip(0.9 * err ** (-0.7 / 5) * prev_err ** (0.4 / 5), 0.2, 5.0)
        factor = jnp.where(ok, factor, jnp.minimum(factor, 1.0))
        # A non-finite error estimate (NaN in the model) ends the solve with NaN, not at max_steps.
        bad = ~jnp.isfinite(err)
        return (jnp.where(bad, u1, jnp.where(ok, u + h, u)), jnp.where(bad, jnp.nan, jnp.where(ok, new, xs)),
                jnp.where(ok, k_new, k0), h * factor, steps + 1, accepted + ok, jnp.where(ok, err, prev_err))

    k0 = field(u0, xs)
    h0 = span / 64
    one = jnp.ones((), x.dtype)
    u, xs, _, _, steps, accepted, _ = jax.lax.while_loop(
        cond, body, (u0, xs, k0, h0, jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32), one))
    t = t_end
    x = schedule.alpha(t) * xs
    x0 = (x - schedule.sigma(t) * model_fn(x, t)) / schedule.alpha(t)
    # Evaluations: the first k0, six per attempted step (FSAL), one for the final data prediction.
    return ReferenceSolution(x0, accepted, 2 + 6 * steps, jnp.abs(u - u1) <= 1e-12 * jnp.abs(span) + 1e-12)
