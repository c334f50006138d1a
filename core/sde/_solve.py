r"""Time stepping: constant steps, or adaptive steps from an embedded error estimate, on one path.

Both walk a :class:`~solverlab.brownian.BrownianTree`, so a rejected adaptive step asks the same
tree for a shorter increment and gets the *same* Brownian path (Jelincic, Foster & Kidger 2024):
rejection does not bias the solution.

The PI controller (Gustafsson 1991; Hairer & Wanner, section IV.2) scales the step by

.. math::
    h_{n+1} = h_n \cdot \mathrm{clip}\Big(s\,\varepsilon_n^{-\beta_1}\,\varepsilon_{n-1}^{\beta_2},
    \ f_{\min},\ f_{\max}\Big), \qquad
    \varepsilon_n = \Big\| \frac{e_n}{\mathrm{atol} + \mathrm{rtol}\,\max(|Y_n|, |Y_{n+1}|)} \Big\|_{\mathrm{RMS}},

accepting the step when :math:`\varepsilon_n \le 1`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from ..brownian import BrownianTree
from ..errors import SolverError, check_range, concrete_value
from ._sde import SDE
from ._solver import AbstractSolver

__all__ = ["AbstractController", "PIController", "StateRuleController", "Solution", "solve", "RESULTS"]

#: Result codes of a solve and what they mean.
RESULTS = {
    0: "success",
    1: "max_steps reached before t1",
    2: "step size underflow (the controller asked for a step below dt_min)",
    3: "the solution became NaN or infinite",
}


class AbstractController:
    """How an adaptive solve picks its steps. A pure, hashable object (a static argument).

    ``first_step(t0, y0, dt0)`` gives the first step; ``decide(t, y, y_next, y_err, h, state)``
    returns ``(accept, next_h, state)``; ``init_state(dtype)`` starts ``state``. A solve stops with
    result 2 when a step below ``dt_min`` is asked for before ``t1``.
    """

    dt_min: float
    needs_error_estimate: bool = True

    def first_step(self, t0, y0, dt0):
        return dt0

    def init_state(self, dtype):
        return jnp.asarray(1.0, dtype)


@dataclasses.dataclass(frozen=True)
class PIController(AbstractController):
    """Adaptive steps from the solver's embedded error estimate (see the module docstring).

    ``rtol``, ``atol``: tolerances; ``dt_min``: smallest step before the solve stops with result 2;
    ``beta1``, ``beta2``: PI gains (defaults for a method with error order about 1);
    ``safety``, ``factor_min``, ``factor_max``: step-factor safety and clipping.
    """

    rtol: float = 1e-3
    atol: float = 1e-3
    dt_min: float = 1e-6
    beta1: float = 0.7
    beta2: float = 0.4
    safety: float = 0.9
    factor_min: float = 0.2
    factor_max: float = 5.0

    def __post_init__(self):
        check_range("rtol", self.rtol, low=0.0)
        check_range("atol", self.atol, low=0.0)
        if concrete_value(self.rtol) is not None and self.rtol == 0 and self.atol == 0:
            raise ValueError("rtol and atol must not both be 0")
        check_range("dt_min", self.dt_min, low=0.0, low_open=True)
        check_range("safety", self.safety, low=0.0, low_open=True, high=1.0)
        check_range("factor_min", self.factor_min, low=0.0, low_open=True, high=1.0)
        check_range("factor_max", self.factor_max, low=1.0)

    def decide(self, t, y, y_next, y_err, h, err_prev):
        scale = self.atol + self.rtol * jnp.maximum(jnp.abs(y), jnp.abs(y_next))
        err = jnp.sqrt(jnp.mean((y_err / scale) ** 2))
        err = jnp.where(jnp.isfinite(err), err, jnp.inf)
        accept = err <= 1.0
        safe_err = jnp.maximum(err, 1e-10)
        factor = self.safety * safe_err ** (-self.beta1)
        factor = factor * jnp.where(accept, err_prev, 1.0) ** self.beta2
        factor = jnp.where(jnp.isfinite(factor), factor, self.factor_min)
        factor = jnp.clip(factor, self.factor_min, self.factor_max)
        return accept, h * factor, jnp.where(accept, safe_err, err_prev)


@dataclasses.dataclass(frozen=True)
class StateRuleController(AbstractController):
    r"""Steps set by the state, every step accepted: :math:`h = \mathrm{clip}(\text{rule}(t, Y), h_{\min}, h_{\max})`.

    Jelincic, Foster & Kidger (2024), CIR experiment: :math:`h = \mathrm{clip}((X\,c)^{2/3}, 2^{-15}, 1)`
    takes small steps where the square-root diffusion is steep (near 0). No error estimate needed.
    """

    rule: Any = None
    dt_min: float = 2.0**-15
    dt_max: float = 1.0
    needs_error_estimate = False

    def __post_init__(self):
        if not callable(self.rule):
            raise ValueError(f"rule must be a function rule(t, y) -> step, got {self.rule!r}")
        check_range("dt_min", self.dt_min, low=0.0, low_open=True)
        check_range("dt_max", self.dt_max, low=self.dt_min)

    def _step(self, t, y):
        h = jnp.asarray(self.rule(t, y))
        h = jnp.where(jnp.isfinite(h), h, self.dt_min)
        return jnp.clip(jnp.min(h), self.dt_min, self.dt_max)  # one step for the whole state

    def first_step(self, t0, y0, dt0):
        return self._step(t0, y0)

    def decide(self, t, y, y_next, y_err, h, state):
        return jnp.asarray(True), self._step(t + h, y_next), state


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Solution:
    """What a solve returns.

    ``ts``, ``ys``: the accepted times and states (``ys[i]`` at ``ts[i]``); for adaptive solves the
    arrays have ``max_steps + 1`` rows and rows past ``n_steps`` are NaN. ``y1``: the state at the
    last accepted time. ``stats``: ``accepted``, ``rejected``, ``nfe`` (drift evaluations).
    ``result``: a code of :data:`RESULTS` (0 is success).
    """

    ts: jax.Array
    ys: jax.Array
    y1: jax.Array
    n_steps: jax.Array
    stats: dict
    result: jax.Array

    def raise_for_result(self) -> "Solution":
        """Raise :class:`~solverlab.SolverError` unless the solve succeeded (concrete results only)."""
        code = concrete_value(self.result)
        if code is not None and int(code) != 0:
            t = float(concrete_value(self.ts)[int(concrete_value(self.n_steps))])
            hint = {
                1: "raise max_steps, or loosen rtol/atol",
                2: "loosen rtol/atol, lower dt_min, or check the SDE for a blow-up",
                3: "reduce dt (or the tolerances); check that drift and diffusion are finite there",
            }[int(code)]
            raise SolverError(f"solve stopped at t = {t:g}: {RESULTS[int(code)]}; {hint}")
        return self


def solve(
    sde: SDE,
    solver: AbstractSolver,
    y0,
    t0: float,
    t1: float,
    *,
    dt: float,
    key=None,
    brownian: BrownianTree | None = None,
    args: Any = None,
    controller: PIController | None = None,
    max_steps: int = 4096,
    check: bool = True,
) -> Solution:
    r"""Solve ``sde`` from ``y0`` at ``t0`` to ``t1``.

    Args:
        sde, solver: what to solve and how (``solver.check(sde)`` must pass).
        y0: initial state (any shape).
        t0, t1: the interval, ``t0 < t1``.
        dt: the step (constant steps) or the first step (adaptive), ``0 < dt <= t1 - t0``; with
            constant steps ``(t1 - t0) / dt`` is rounded to a whole number of steps (static).
        key: a ``jax.random`` key for a new :class:`~solverlab.brownian.BrownianTree` with
            ``tol = dt / 8`` (constant steps) or ``controller.dt_min`` (adaptive), or
        brownian: the tree to use (queries at least ``tol`` apart are exact in law).
        args: passed to ``drift`` and ``diffusion``.
        controller: a :class:`PIController` (needs a solver with an embedded error estimate) or a
            :class:`StateRuleController` for adaptive steps, or None for constant steps.
        max_steps: size of the step buffer of an adaptive solve (static).
        check: raise :class:`~solverlab.SolverError` when the result is not success (only when the
            result is concrete, i.e. outside ``jit``; inside, read ``Solution.result``).
    """
    if not isinstance(sde, SDE):
        raise ValueError(f"sde must be a solverlab.sde.SDE, got {type(sde).__name__}")
    if not isinstance(solver, AbstractSolver):
        raise ValueError(f"solver must be a solverlab.sde solver instance, got {solver!r}")
    solver.check(sde)
    check_range("t0", t0)
    check_range("t1", t1)
    c0, c1 = concrete_value(t0), concrete_value(t1)
    span = None if c0 is None or c1 is None else float(c1 - c0)
    if span is not None and span <= 0:
        raise ValueError(f"t1 must be greater than t0 = {float(c0):g}, got t1 = {float(c1):g}")
    check_range("dt", dt, low=0.0, low_open=True, high=span)
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"max_steps must be a positive int, got {max_steps!r}")
    y0 = jnp.asarray(y0, jnp.result_type(float))
    w_shape = sde.brownian_shape(y0, args)
    if controller is not None and not isinstance(controller, AbstractController):
        raise ValueError(f"controller must be a PIController or StateRuleController, got {controller!r}")
    if controller is not None and controller.needs_error_estimate and not solver.error_estimate:
        raise ValueError(
            f"{solver.name} has no embedded error estimate: use constant steps (controller=None) "
            "or an adaptive-capable solver (Heun, ShARK)"
        )
    if brownian is None:
        if key is None:
            raise ValueError("give key (a jax.random key) or brownian (a BrownianTree)")
        tol = controller.dt_min if controller is not None else dt / 8.0
        brownian = BrownianTree(t0, t1, tol, w_shape, key, levy_area=solver.levy_area)
    else:
        # Below its tol the tree interpolates with one draw per leaf: W stays consistent but H and
        # K of a sub-leaf step are not Brownian, so every step must be at least tol long.
        tree_tol, finest = concrete_value(brownian.tol), concrete_value(dt)
        if controller is not None:
            finest = controller.dt_min
        if tree_tol is not None and finest is not None and float(tree_tol) > float(finest) * (1 + 1e-6):
            what = "controller.dt_min" if controller is not None else "dt"
            raise ValueError(
                f"brownian.tol must be <= {what} = {float(finest):g} (steps shorter than the tree's "
                f"tol see interpolated noise), got tol = {float(tree_tol):g}"
            )
        if tuple(brownian.shape) != tuple(w_shape):
            raise ValueError(f"brownian must have shape {w_shape}, got {brownian.shape}")
        if solver.levy_area is not None and brownian.levy_area is None:
            raise ValueError(f"{solver.name} needs a tree with levy_area='space-time'")
    if controller is None:
        if span is None:
            raise ValueError("constant steps need concrete t0 and t1 (the number of steps is static)")
        n = max(1, int(round(span / float(dt))))
        sol = _solve_constant(sde, solver, y0, t0, t1, n, brownian, args)
    else:
        sol = _solve_adaptive(sde, solver, y0, t0, t1, dt, brownian, args, controller, max_steps)
    return sol.raise_for_result() if check else sol


def _finite(y):
    return jnp.all(jnp.isfinite(y))


@jax.jit(static_argnames=("sde", "solver", "n"))
def _solve_constant(sde, solver, y0, t0, t1, n, brownian, args):
    ts = jnp.linspace(t0, t1, n + 1, dtype=y0.dtype)

    def step(y, k):
        t, t_next = ts[k], ts[k + 1]
        inc = brownian.evaluate(t, t_next)
        y_next, _ = solver.step(sde, t, y, t_next - t, inc, args)
        return y_next, y_next

    y1, ys = jax.lax.scan(step, y0, jnp.arange(n))
    ys = jnp.concatenate([y0[None], ys])
    ok = jax.vmap(_finite)(ys)
    # First non-finite state, if any: report it rather than return garbage.
    bad = jnp.argmin(ok)
    result = jnp.where(jnp.all(ok), 0, 3)
    n_steps = jnp.where(jnp.all(ok), n, jnp.maximum(bad - 1, 0))
    stats = {
        "accepted": jnp.asarray(n),
        "rejected": jnp.asarray(0),
        "nfe": jnp.asarray(n * solver.drift_evals),
    }
    return Solution(ts, ys, y1, n_steps, stats, result)


@jax.jit(static_argnames=("sde", "solver", "controller", "max_steps"))
def _solve_adaptive(sde, solver, y0, t0, t1, dt0, brownian, args, controller, max_steps):
    dtype = y0.dtype
    t0, t1 = jnp.asarray(t0, dtype), jnp.asarray(t1, dtype)
    nan = jnp.full((max_steps + 1,) + y0.shape, jnp.nan, dtype)
    ys = nan.at[0].set(y0)
    ts = jnp.full((max_steps + 1,), jnp.nan, dtype).at[0].set(t0)

    def cond(state):
        t, _, _, _, n, _, _, _, _, result = state
        return (t < t1) & (n < max_steps) & (result == 0)

    def body(state):
        t, y, h, c_state, n, rejected, nfe, ts, ys, result = state
        h = jnp.minimum(h, t1 - t)
        inc = brownian.evaluate(t, t + h)
        y_next, y_err = solver.step(sde, t, y, h, inc, args)
        accept, h_new, c_state = controller.decide(t, y, y_next, y_err, h, c_state)
        t_new = jnp.where(accept, t + h, t)
        y_new = jnp.where(accept, y_next, y)
        n_new = n + accept.astype(n.dtype)
        ts = jnp.where(accept, ts.at[n_new].set(t_new), ts)
        ys = jnp.where(accept, ys.at[n_new].set(y_new), ys)
        result = jnp.where(accept & ~_finite(y_next), 3, result)
        # Compare to dt_min with a little slack: clipped rules return exactly dt_min.
        result = jnp.where((h_new < controller.dt_min * (1 - 1e-6)) & (t_new < t1), 2, result)
        rejected = rejected + (~accept).astype(n.dtype)
        return (t_new, y_new, h_new, c_state, n_new, rejected, nfe + solver.drift_evals, ts, ys, result)

    zero = jnp.asarray(0, jnp.int32)
    h0 = jnp.asarray(controller.first_step(t0, y0, jnp.asarray(dt0, dtype)), dtype)
    init = (t0, y0, h0, controller.init_state(dtype), zero, zero, zero, ts, ys, zero)
    t, y, _, _, n, rejected, nfe, ts, ys, result = jax.lax.while_loop(cond, body, init)
    result = jnp.where((result == 0) & (t < t1), 1, result)
    stats = {"accepted": n, "rejected": rejected, "nfe": nfe}
    return Solution(ts, ys, y, n, stats, result)
