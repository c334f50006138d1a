r"""Samplers of the probability-flow ODE of a diffusion model, from a noise prediction.

With :math:`x_t = \alpha_t x_0 + \sigma_t \epsilon` and :math:`\lambda_t = \log(\alpha_t/\sigma_t)`,
the probability-flow ODE (Song et al. 2021) written with the noise prediction
:math:`\hat\epsilon(x, t)` is

.. math::
    \frac{dx}{dt} = \frac{\dot\alpha_t}{\alpha_t}\,x
        + \Big(\dot\sigma_t - \sigma_t\frac{\dot\alpha_t}{\alpha_t}\Big)\hat\epsilon(x, t),

semi-linear: its linear part is solved exactly by the **exponential integrators** of Lu et al.
(DPM-Solver, 2022), which step in :math:`\lambda`, :math:`h = \lambda_t - \lambda_s`:

* DDIM = DPM-Solver-1: :math:`x_t = \frac{\alpha_t}{\alpha_s}x_s - \sigma_t(e^h - 1)\hat\epsilon_s`;
* DPM-Solver-2 and -3 (singlestep, intermediate points at fractions :math:`r` of :math:`h`);
* DPM-Solver++(2M) (Lu et al. 2022b), multistep on the *data* prediction
  :math:`\hat x_0 = (x - \sigma\hat\epsilon)/\alpha`:
  :math:`x_t = \frac{\sigma_t}{\sigma_s}x_s - \alpha_t(e^{-h} - 1)D`,
  :math:`D = (1 + \tfrac1{2r})\hat x_{0,s} - \tfrac1{2r}\hat x_{0,s'}`, :math:`r = h_{\text{prev}}/h`;
  and (3M) with the quadratic through the last three data predictions,
  :math:`x_t = \frac{\sigma_t}{\sigma_s}x_s - \alpha_t\big(\varphi_1 \hat x_{0,s} - \varphi_2 D_1 + \varphi_3 D_2\big)`,
  :math:`\varphi_1 = e^{-h} - 1`, :math:`\varphi_2 = \varphi_1/h + 1`, :math:`\varphi_3 = \varphi_2/h - \tfrac12`,
  with :math:`D_1, D_2` the first and second divided differences in :math:`\lambda` scaled by :math:`h`, :math:`h^2`
  (the authors' and diffusers' update, kept so results compare with theirs). Note: Taylor expansion of
  :math:`\int e^{\lambda}\hat x_0\,d\lambda` asks for :math:`2\varphi_3 D_2` (uniform steps give
  :math:`D_2 \approx h^2\hat x_0''/2`), so the published update leaves an :math:`O(h^3)` local error and is
  second order asymptotically; it looks third order at moderate NFE because that term is small
  (chapter 08 measures both);

and, for comparison, explicit **Euler** on the ODE in :math:`t` (what the exponential integrators
improve on) and **Heun** in the EDM variables :math:`\tilde x = x/\alpha`,
:math:`\tilde\sigma = \sigma/\alpha`, where the ODE is :math:`d\tilde x/d\tilde\sigma = \hat\epsilon`
(Karras et al. 2022).

**The end of sampling.** Every method integrates from ``t_start`` down to ``t_end`` (default
``schedule.t_min``) and then takes one last first-order step to noise level zero, which is exactly
the data prediction :math:`\hat x_0` at ``t_end`` (the DDIM and DPM-Solver++ steps with
:math:`\sigma_t = 0`). ``nfe`` counts every model evaluation, that last one included.

**Compiled once for every NFE.** ``nfe`` may be a Python int (static: one compiled sampler per value,
loops become ``lax.scan`` and can be differentiated) or a JAX integer array (traced: one compiled
sampler serves every NFE, loops become ``lax.while_loop``: an error-versus-NFE curve is a loop over
NFE with no recompilation; under ``jax.vmap`` every lane runs as long as the longest). Step :math:`i` of :math:`n` is placed by
:func:`~solverlab.diffusion.schedules.time_at_fraction`, so :math:`n` need not be known at compile time.

**Adding a method.** :func:`register` takes a *stepper*
``stepper(model_fn, schedule, x, grid, evaluations, fitted) -> x`` at ``grid.t(grid.n)``, where
``grid`` is a :class:`Grid`, ``evaluations = nfe - 1`` (maybe traced) and ``fitted`` the result of
the method's preparation step (or ``None``); loops run ``jax.lax.fori_loop(0, grid.n, ...)``.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..errors import SolverError, check_range, concrete_value
from .schedules import TIMESTEP_KINDS, time_at_fraction

__all__ = ["METHODS", "Grid", "fitted_type", "register", "sample", "sample_ancestral"]

#: Method name -> model evaluations per step of the main loop (every name :func:`sample` accepts).
METHODS: dict[str, int] = {}
_STEPPERS: dict[str, Callable] = {}
_FITTED: dict[str, type] = {}  # method -> the type of the preparation result it needs


def register(name: str, stepper: Callable, evaluations_per_step: int, fitted: type | None = None):
    """Make ``name`` a method of :func:`sample` (see the module docstring for the stepper protocol).

    ``fitted``: the type of the preparation result the method needs (``sample(..., fitted=...)``);
    ``None`` when it needs none.
    """
    METHODS[name] = evaluations_per_step
    _STEPPERS[name] = stepper
    if fitted is not None:
        _FITTED[name] = fitted


def fitted_type(method: str) -> type | None:
    """The type of preparation result ``method`` needs (``sample(..., fitted=...)``), or ``None``."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    return _FITTED.get(method)


class Grid(NamedTuple):
    r"""The main loop's decreasing times :math:`t_0 = t_{\text{start}} > \dots > t_n = t_{\text{end}}`.

    ``n`` may be traced. Either spread evenly in the variable ``kind`` (see
    :func:`~solverlab.diffusion.schedules.timesteps`) or given as the array ``times`` (length
    :math:`n + 1`, e.g. a searched schedule).
    """

    schedule: object
    t_start: jax.Array
    t_end: jax.Array
    n: jax.Array | int
    kind: str = "logSNR"
    times: jax.Array | None = None
    rho: float = 7.0

    def t(self, i):
        """Time of grid point ``i`` (end points exact)."""
        if self.times is not None:
            return self.times[i]
        frac = jnp.asarray(i, self.t_start.dtype) / jnp.maximum(self.n, 1)
        t = time_at_fraction(self.schedule, frac, self.kind, self.t_start, self.t_end, self.rho)
        return jnp.where(i == 0, self.t_start, jnp.where(i == self.n, self.t_end, t))

    def lam(self, i):
        r""":math:`\lambda` at grid point ``i``."""
        return self.schedule.lambda_(self.t(i))


def main_loop_steps(method: str, nfe):
    """Steps of the main loop for ``nfe`` evaluations (int or traced).

    One evaluation goes to the final step to noise level zero; a method of ``k`` evaluations per step
    takes ``(nfe - 1) // k`` full steps and one cheaper step for a remainder.
    """
    return -(-(nfe - 1) // METHODS[method])


def sample(model_fn: Callable, x_T, schedule, method: str = "dpm_solver++_2m", nfe=10,
           t_start=None, t_end=None, *, steps=None, fitted=None, check: bool = True):
    r"""Sample by integrating the probability-flow ODE from ``x_T`` at ``t_start`` to noise level zero.

    Args:
        model_fn: ``model_fn(x, t)`` -> noise prediction of the shape of ``x`` (``x`` batched).
        x_T: the starting noise, e.g. ``jax.random.normal(key, (n, d)) * schedule.sigma(t_start)``
            (VP: :math:`\sigma \approx 1`).
        schedule: a noise schedule (:mod:`solverlab.diffusion.schedules`): ``alpha``, ``sigma``,
            ``lambda_``, ``t_of_lambda``, ``t_min``, ``t_max``.
        method: one of :data:`METHODS`.
        nfe: number of model evaluations, >= 1 (one of them for the final step to noise zero;
            ``nfe = 1`` is that step alone, the data prediction at ``t_start``). A Python int
            compiles per value; a JAX integer scalar is traced (one compile for every NFE).
        t_start, t_end: integrate from ``t_start`` (default ``schedule.t_max``) down to ``t_end``
            (default ``schedule.t_min``), then step to noise level zero.
        steps: where the steps go (default: a fitted result's times if it has them, else ``"logSNR"``):
            a kind of :func:`~solverlab.diffusion.schedules.timesteps`,
            ``"logSNR"`` (uniform in :math:`\lambda`, the DPM-Solver default: the exponential
            integrators' local error is a power of :math:`h` in :math:`\lambda`), ``"time"`` or
            ``"karras"`` (EDM, :math:`\rho = 7`); or an explicit decreasing array of times from
            ``t_start`` to ``t_end`` with one point per main-loop step plus one.
        fitted: the preparation result a fitted method needs (DPM-Solver-v3 statistics, DC-Solver
            ratios, a searched schedule); a searched schedule also supplies the times.
        check: raise :class:`~solverlab.SolverError` when the result is not finite (outside jit).

    Returns:
        The samples :math:`\hat x_0`, shape of ``x_T``.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    needs = _FITTED.get(method)
    if needs is not None and not isinstance(fitted, needs):
        raise ValueError(f"method {method!r} needs fitted = a {needs.__name__} from its preparation step, "
                         f"got {type(fitted).__name__}")
    fitted_times = getattr(fitted, "times", None)
    if steps is None:
        times, steps = fitted_times, "logSNR"
    elif fitted_times is not None:
        raise ValueError(f"fitted carries its own step times: leave steps unset (got steps = {steps!r})")
    elif isinstance(steps, str):
        if steps not in TIMESTEP_KINDS:
            raise ValueError(f"steps must be one of {', '.join(TIMESTEP_KINDS)} or an array of times, got {steps!r}")
        times = None
    else:
        times, steps = steps, "logSNR"
    if times is not None and (t_start is not None or t_end is not None):
        raise ValueError("t_start and t_end come from the step times (steps as an array, or fitted): leave them unset")
    x_T, t_start, t_end = _checked(model_fn, x_T, schedule, nfe, t_start, t_end)
    fitted_nfe = getattr(fitted, "nfe", None)
    if fitted_nfe is not None and concrete_value(nfe) is not None and int(fitted_nfe) != int(concrete_value(nfe)):
        raise ValueError(f"fitted is for nfe = {int(fitted_nfe)}, got nfe = {int(concrete_value(nfe))}")
    if times is not None:
        times = _checked_times(times, method, nfe, x_T.dtype, schedule)
        t_start, t_end = times[0], times[-1]
    x0 = _sample(model_fn, x_T, schedule, t_start, t_end, None, fitted, times, nfe, method=method, steps=steps)
    return _finite(x0, check, f"{method} with nfe = {_describe(nfe)}")


def _describe(nfe):
    value = concrete_value(nfe)
    return "traced" if value is None else str(np.asarray(value).tolist())


def _checked(model_fn, x_T, schedule, nfe, t_start, t_end):
    """The argument checks of every sampler (before anything compiles)."""
    if isinstance(nfe, bool) or not (isinstance(nfe, int) or (
            hasattr(nfe, "dtype") and jnp.issubdtype(nfe.dtype, jnp.integer) and jnp.ndim(nfe) == 0)):
        raise ValueError(f"nfe must be an int >= 1 (or a JAX integer scalar), got {nfe!r}")
    check_range("nfe", nfe, low=1)
    return checked_problem(model_fn, x_T, schedule, t_start, t_end)


def _checked_times(times, method, nfe, dtype, schedule):
    times = jnp.asarray(times, dtype)
    check_range("steps (times)", times, low=schedule.t_min, high=schedule.t_max)
    if times.ndim != 1 or times.shape[0] < 2:
        raise ValueError(f"steps as times must be a 1-D array of at least 2 times, got shape {times.shape}")
    value = concrete_value(nfe)
    if value is None:
        raise ValueError("steps as an array of times needs a concrete nfe (it fixes the number of steps)")
    expected = main_loop_steps(method, int(value)) + 1
    if times.shape[0] != expected:
        raise ValueError(f"steps as times must have {expected} points for {method} with nfe = {int(value)}, "
                         f"got {times.shape[0]}")
    concrete = concrete_value(times)
    if concrete is not None and not bool(np.all(np.diff(np.asarray(concrete)) < 0)):
        raise ValueError("steps as times must be strictly decreasing")
    return times


_SCHEDULE_API = ("alpha", "sigma", "lambda_", "t_of_lambda", "t_min", "t_max")


def check_schedule(schedule):
    """A noise schedule must expose alpha, sigma, lambda_, t_of_lambda, t_min, t_max."""
    missing = [name for name in _SCHEDULE_API if not hasattr(schedule, name)]
    if missing:
        raise ValueError(f"schedule must be a noise schedule (VPLinear, VPCosine, VE, EDM, DDPMLinear, ...) with "
                         f"{', '.join(_SCHEDULE_API)}; got {schedule!r}, which lacks {', '.join(missing)}")


def checked_problem(model_fn, x_T, schedule, t_start, t_end):
    """Check the interval (defaults: the schedule's) and the model's output shape; returns
    ``x_T``, ``t_start``, ``t_end`` as arrays. Shared with :mod:`.reference`."""
    check_schedule(schedule)
    t_start = schedule.t_max if t_start is None else t_start
    t_end = schedule.t_min if t_end is None else t_end
    check_range("t_start", t_start, low=schedule.t_min, high=schedule.t_max)
    check_range("t_end", t_end, low=schedule.t_min, high=schedule.t_max)
    ts, te = concrete_value(t_start), concrete_value(t_end)
    if ts is not None and te is not None and not te < ts:
        raise ValueError(f"t_end must be < t_start, got t_end = {float(te):g}, t_start = {float(ts):g}")
    x_T = jnp.asarray(x_T)
    out = jax.eval_shape(model_fn, x_T, jnp.zeros((), x_T.dtype))
    if out.shape != x_T.shape:
        raise ValueError(f"model_fn must return the shape of x {x_T.shape}, got {out.shape}")
    return x_T, jnp.asarray(t_start, x_T.dtype), jnp.asarray(t_end, x_T.dtype)


def _finite(x0, check: bool, what: str):
    if check and concrete_value(x0) is not None and not bool(jnp.all(jnp.isfinite(x0))):
        raise SolverError(f"{what} produced NaN or infinite samples; try more steps or a lower guidance scale")
    return x0


# filter_jit: a model that is an equinox Module (arrays inside, e.g. a guidance scale) is traced,
# so a new guidance or label reuses the compiled sampler; functions, schedules and ints are static;
# a JAX-array nfe is traced too.
@eqx.filter_jit
def _sample(model_fn, x, schedule, t_start, t_end, key, fitted, times, nfe, *, method, steps):
    n = main_loop_steps(method, nfe) if times is None else times.shape[0] - 1
    grid = Grid(schedule, t_start, t_end, n, steps, times)
    if key is None:
        x = _STEPPERS[method](model_fn, schedule, x, grid, nfe - 1, fitted)
    else:
        x = _ancestral(model_fn, schedule, x, grid, key)
    # Final first-order step to noise level zero: the data prediction at the last time.
    t = grid.t(n)
    return (x - schedule.sigma(t) * model_fn(x, t)) / schedule.alpha(t)


def sample_ancestral(model_fn: Callable, key, x_T, schedule, nfe=100, t_start=None, t_end=None, *,
                     check: bool = True):
    r"""Ancestral sampling: the reverse SDE by its first-order exponential integrator.

    SDE-DPM-Solver-1 (Lu et al. 2022b, eq. 4.3 in noise form; DDPM's ancestral step on a uniform
    :math:`\lambda` grid):

    .. math::
        x_t = \frac{\alpha_t}{\alpha_s}x_s - 2\sigma_t(e^h - 1)\hat\epsilon(x_s, s)
              + \sigma_t\sqrt{e^{2h} - 1}\,z, \qquad z \sim N(0, I),

    then the data prediction at ``t_end`` (noise level zero). Unlike the ODE samplers the map from
    ``x_T`` is random, and the law converges only at first order, but errors made early are forgotten.
    Arguments as :func:`sample`, plus ``key`` for the fresh noise (step ``i`` uses ``fold_in(key, i)``);
    ``nfe`` >= 1 evaluations.
    """
    x_T, t_start, t_end = _checked(model_fn, x_T, schedule, nfe, t_start, t_end)
    x0 = _sample(model_fn, x_T, schedule, t_start, t_end, key, None, None, nfe, method="ddim", steps="logSNR")
    return _finite(x0, check, f"ancestral sampling with nfe = {_describe(nfe)}")


# -- the steppers: (model_fn, schedule, x, grid, evaluations, fitted) -> x at grid.t(grid.n) -----------------


def coefficients(schedule, s, t):
    r""":math:`\alpha_s, \sigma_s, \alpha_t, \sigma_t, h = \lambda_t - \lambda_s` of a step from ``s`` to ``t``."""
    return schedule.alpha(s), schedule.sigma(s), schedule.alpha(t), schedule.sigma(t), \
        schedule.lambda_(t) - schedule.lambda_(s)


def data_prediction(model_fn, schedule, x, t):
    r"""The data prediction :math:`\hat x_0 = (x - \sigma_t\hat\epsilon)/\alpha_t` (one evaluation)."""
    return (x - schedule.sigma(t) * model_fn(x, t)) / schedule.alpha(t)


def _ddim(model_fn, schedule, x, grid, evaluations, fitted):
    def body(i, x):
        s, t = grid.t(i), grid.t(i + 1)
        return _dpm1(model_fn, schedule, x, s, t, model_fn(x, s))

    return jax.lax.fori_loop(0, grid.n, body, x)


def _ancestral(model_fn, schedule, x, grid, key):
    def body(i, x):
        s, t = grid.t(i), grid.t(i + 1)
        a_s, _, a_t, s_t, h = coefficients(schedule, s, t)
        z = jax.random.normal(jax.random.fold_in(key, i), x.shape, x.dtype)
        return (a_t / a_s * x - 2 * s_t * jnp.expm1(h) * model_fn(x, s)
                + s_t * jnp.sqrt(jnp.expm1(2 * h)) * z)

    return jax.lax.fori_loop(0, grid.n, body, x)


def _dpm1(model_fn, sch, x, s, t, eps_s):
    a_s, _, a_t, s_t, h = coefficients(sch, s, t)
    return a_t / a_s * x - s_t * jnp.expm1(h) * eps_s


def _dpm2(model_fn, sch, x, s, t, eps_s, r=0.5):
    """DPM-Solver-2 (Lu et al. 2022, algorithm 1): one intermediate point at lambda_s + r h."""
    a_s, _, a_t, s_t, h = coefficients(sch, s, t)
    s1 = sch.t_of_lambda(sch.lambda_(s) + r * h)
    u = sch.alpha(s1) / a_s * x - sch.sigma(s1) * jnp.expm1(r * h) * eps_s
    d1 = model_fn(u, s1) - eps_s
    return a_t / a_s * x - s_t * jnp.expm1(h) * eps_s - s_t / (2 * r) * jnp.expm1(h) * d1


def _dpm3(model_fn, sch, x, s, t, eps_s, r1=1 / 3, r2=2 / 3):
    """DPM-Solver-3 (Lu et al. 2022, algorithm 2): intermediate points at r1 h and r2 h."""
    a_s, _, a_t, s_t, h = coefficients(sch, s, t)
    lam_s = sch.lambda_(s)
    s1, s2 = sch.t_of_lambda(lam_s + r1 * h), sch.t_of_lambda(lam_s + r2 * h)
    u1 = sch.alpha(s1) / a_s * x - sch.sigma(s1) * jnp.expm1(r1 * h) * eps_s
    d1 = model_fn(u1, s1) - eps_s
    u2 = (sch.alpha(s2) / a_s * x - sch.sigma(s2) * jnp.expm1(r2 * h) * eps_s
          - sch.sigma(s2) * r2 / r1 * (jnp.expm1(r2 * h) / (r2 * h) - 1) * d1)
    d2 = model_fn(u2, s2) - eps_s
    return a_t / a_s * x - s_t * jnp.expm1(h) * eps_s - s_t / r2 * (jnp.expm1(h) / h - 1) * d2


_DPM_STEPS = (_dpm1, _dpm2, _dpm3)


def _singlestep(order: int):
    """DPM-Solver-``order`` steps; the last step spends what is left of the evaluations (order <= k)."""

    def stepper(model_fn, schedule, x, grid, evaluations, fitted):
        last = evaluations - order * (grid.n - 1)
        branches = [lambda x, s, t, k=k: _DPM_STEPS[k](model_fn, schedule, x, s, t, model_fn(x, s))
                    for k in range(order)]

        def full_step(i, x):
            return branches[order - 1](x, grid.t(i), grid.t(i + 1))

        # Full steps in the loop; the remainder step (order <= k) once after it.
        x = jax.lax.fori_loop(0, grid.n - 1, full_step, x)
        last_step = jnp.maximum(grid.n - 1, 0)
        def remainder(x):
            return jax.lax.switch(jnp.clip(last - 1, 0, order - 1), branches, x, grid.t(last_step),
                                  grid.t(last_step + 1))

        return jax.lax.cond(grid.n > 0, remainder, lambda x: x, x)  # nfe = 1: no main-loop step

    return stepper


def _dpm_solver_pp_2m(model_fn, schedule, x, grid, evaluations, fitted):
    """DPM-Solver++(2M); the first step is first order (no earlier data prediction yet)."""

    def body(i, carry):
        x, x0_prev, lam_prev = carry
        s, t = grid.t(i), grid.t(i + 1)
        _, s_s, a_t, s_t, h = coefficients(schedule, s, t)
        x0 = data_prediction(model_fn, schedule, x, s)
        r = (schedule.lambda_(s) - lam_prev) / h
        d = jnp.where(i == 0, x0, (1 + 1 / (2 * r)) * x0 - 1 / (2 * r) * x0_prev)
        return s_t / s_s * x - a_t * jnp.expm1(-h) * d, x0, schedule.lambda_(s)

    lam0 = grid.lam(0) - 1.0  # any value: the first step does not use it
    return jax.lax.fori_loop(0, grid.n, body, (x, jnp.zeros_like(x), lam0))[0]


def _dpm_solver_pp_3m(model_fn, schedule, x, grid, evaluations, fitted):
    """DPM-Solver++(3M): first-order, then second-order, then third-order multistep updates."""

    def body(i, carry):
        x, x0_1, x0_2, lam_1, lam_2 = carry  # the two previous data predictions and their lambdas
        s, t = grid.t(i), grid.t(i + 1)
        _, s_s, a_t, s_t, h = coefficients(schedule, s, t)
        lam_s = schedule.lambda_(s)
        x0 = data_prediction(model_fn, schedule, x, s)
        phi1 = jnp.expm1(-h)
        phi2 = phi1 / h + 1.0
        phi3 = phi2 / h - 0.5
        r0 = (lam_s - lam_1) / h
        r1 = (lam_1 - lam_2) / h
        d1_0 = (x0 - x0_1) / r0
        d1_1 = (x0_1 - x0_2) / r1
        d1 = jnp.where(i == 0, 0.0, jnp.where(i == 1, d1_0, d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)))
        d2 = jnp.where(i >= 2, (d1_0 - d1_1) / (r0 + r1), 0.0)
        x = s_t / s_s * x - a_t * (phi1 * x0 - phi2 * d1 + phi3 * d2)
        return x, x0, x0_1, lam_s, lam_1

    lam0 = grid.lam(0)  # placeholders the warm-up steps mask out, kept finite
    zeros = jnp.zeros_like(x)
    return jax.lax.fori_loop(0, grid.n, body, (x, zeros, zeros, lam0 + 1.0, lam0 + 2.0))[0]


def _euler(model_fn, schedule, x, grid, evaluations, fitted):
    def velocity(x, t):
        dlog_alpha = jax.grad(lambda u: jnp.log(schedule.alpha(u)))(t)
        dsigma = jax.grad(schedule.sigma)(t)
        return dlog_alpha * x + (dsigma - schedule.sigma(t) * dlog_alpha) * model_fn(x, t)

    def body(i, x):
        s, t = grid.t(i), grid.t(i + 1)
        return x + (t - s) * velocity(x, s)

    return jax.lax.fori_loop(0, grid.n, body, x)


def _heun(model_fn, schedule, x, grid, evaluations, fitted):
    """EDM's Heun in (x/alpha, sigma/alpha); the last step Euler when the evaluations run out."""

    def scaled(t):
        return schedule.sigma(t) / schedule.alpha(t)

    def eps(xs, t):  # the noise prediction at the scaled state
        return model_fn(schedule.alpha(t) * xs, t)

    heun_steps = evaluations // 2  # grid.n - heun_steps is 0 or 1

    def heun(xs, s, t):
        d = eps(xs, s)
        pred = xs + (scaled(t) - scaled(s)) * d
        return xs + (scaled(t) - scaled(s)) * 0.5 * (d + eps(pred, t))

    def euler(xs, s, t):
        return xs + (scaled(t) - scaled(s)) * eps(xs, s)

    def body(i, xs):
        return jax.lax.cond(i < heun_steps, heun, euler, xs, grid.t(i), grid.t(i + 1))

    xs = jax.lax.fori_loop(0, grid.n, body, x / schedule.alpha(grid.t(0)))
    return schedule.alpha(grid.t(grid.n)) * xs


for _name, _stepper, _evaluations in [
    ("ddim", _ddim, 1),
    ("dpm_solver_2", _singlestep(2), 2),
    ("dpm_solver_3", _singlestep(3), 3),
    ("dpm_solver++_2m", _dpm_solver_pp_2m, 1),
    ("dpm_solver++_3m", _dpm_solver_pp_3m, 1),
    ("euler", _euler, 1),
    ("heun", _heun, 2),
]:
    register(_name, _stepper, _evaluations)
