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
  with :math:`D_1, D_2` the first and second divided differences in :math:`\lambda` scaled by :math:`h`, :math:`h^2`;

and, for comparison, explicit **Euler** on the ODE in :math:`t` (what the exponential integrators
improve on) and **Heun** in the EDM variables :math:`\tilde x = x/\alpha`,
:math:`\tilde\sigma = \sigma/\alpha`, where the ODE is :math:`d\tilde x/d\tilde\sigma = \hat\epsilon`
(Karras et al. 2022).

**The end of sampling.** Every method integrates from ``t_start`` down to ``t_end`` (default
``schedule.t_min``) and then takes one last first-order step to noise level zero, which is exactly
the data prediction :math:`\hat x_0` at ``t_end`` (the DDIM and DPM-Solver++ steps with
:math:`\sigma_t = 0`). ``nfe`` counts every model evaluation, that last one included.
"""

from __future__ import annotations

from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp

from ..errors import SolverError, check_range, concrete_value
from .schedules import TIMESTEP_KINDS, timesteps

__all__ = ["METHODS", "sample", "sample_ancestral"]

#: Method name -> model evaluations per step of the main loop.
METHODS = {
    "ddim": 1,
    "dpm_solver_2": 2,
    "dpm_solver_3": 3,
    "dpm_solver++_2m": 1,
    "dpm_solver++_3m": 1,
    "euler": 1,
    "heun": 2,
}


def _grid_points(method: str, nfe: int) -> int:
    """Grid points of the main loop for ``nfe`` evaluations.

    One evaluation goes to the final step to noise level zero; singlestep methods of order k take
    ``(nfe - 1) // k`` steps of order k and one lower-order step for a remainder.
    """
    steps = -(-(nfe - 1) // METHODS[method])  # ceil: the remainder becomes a lower-order step
    return steps + 1


def sample(model_fn: Callable, x_T, schedule, method: str = "dpm_solver++_2m", nfe: int = 10,
           t_start=None, t_end=None, *, steps: str = "logSNR", check: bool = True):
    r"""Sample by integrating the probability-flow ODE from ``x_T`` at ``t_start`` to noise level zero.

    Args:
        model_fn: ``model_fn(x, t)`` -> noise prediction of the shape of ``x`` (``x`` batched).
        x_T: the starting noise, e.g. ``jax.random.normal(key, (n, d)) * schedule.sigma(t_start)``
            (VP: :math:`\sigma \approx 1`).
        schedule: a noise schedule (:mod:`solverlab.diffusion.schedules`): ``alpha``, ``sigma``,
            ``lambda_``, ``t_of_lambda``, ``t_min``, ``t_max``.
        method: one of :data:`METHODS`.
        nfe: number of model evaluations, >= 1 (one of them for the final step to noise zero;
            ``nfe = 1`` is that step alone, the data prediction at ``t_start``).
        t_start, t_end: integrate from ``t_start`` (default ``schedule.t_max``) down to ``t_end``
            (default ``schedule.t_min``), then step to noise level zero.
        steps: where the steps go, a kind of :func:`~solverlab.diffusion.schedules.timesteps`:
            ``"logSNR"`` (uniform in :math:`\lambda`, the DPM-Solver default: the exponential
            integrators' local error is a power of :math:`h` in :math:`\lambda`), ``"time"`` or
            ``"karras"`` (EDM, :math:`\rho = 7`).
        check: raise :class:`~solverlab.SolverError` when the result is not finite (outside jit).

    Returns:
        The samples :math:`\hat x_0`, shape of ``x_T``.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if steps not in TIMESTEP_KINDS:
        raise ValueError(f"steps must be one of {', '.join(TIMESTEP_KINDS)}, got {steps!r}")
    x_T, t_start, t_end = _checked(model_fn, x_T, schedule, nfe, t_start, t_end)
    x0 = _sample(model_fn, x_T, schedule, t_start, t_end, None, method=method, nfe=nfe, steps=steps)
    return _finite(x0, check, f"{method} with nfe = {nfe}")


def _checked(model_fn, x_T, schedule, nfe, t_start, t_end):
    """The argument checks of every sampler (before anything compiles)."""
    if isinstance(nfe, bool) or not isinstance(nfe, int):
        raise ValueError(f"nfe must be an int >= 1, got {nfe!r}")
    check_range("nfe", nfe, low=1)
    return checked_problem(model_fn, x_T, schedule, t_start, t_end)


def checked_problem(model_fn, x_T, schedule, t_start, t_end):
    """Check the interval (defaults: the schedule's) and the model's output shape; returns
    ``x_T``, ``t_start``, ``t_end`` as arrays. Shared with :mod:`.reference`."""
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
# so a new guidance or label reuses the compiled sampler; functions, schedules and ints are static.
@eqx.filter_jit
def _sample(model_fn, x, schedule, t_start, t_end, key, *, method, nfe, steps):
    t = t_start
    if nfe > 1:
        ts = timesteps(schedule, _grid_points(method, nfe) - 1, steps, t_start, t_end)
        if key is None:
            x = _STEPPERS[method](model_fn, schedule, x, ts, nfe - 1)
        else:
            x = _ancestral(model_fn, schedule, x, ts, key)
        t = ts[-1]
    # Final first-order step to noise level zero: the data prediction at the last time.
    return (x - schedule.sigma(t) * model_fn(x, t)) / schedule.alpha(t)


def sample_ancestral(model_fn: Callable, key, x_T, schedule, nfe: int = 100, t_start=None, t_end=None, *,
                     check: bool = True):
    r"""Ancestral sampling: the reverse SDE by its first-order exponential integrator.

    SDE-DPM-Solver-1 (Lu et al. 2022b, eq. 4.3 in noise form; DDPM's ancestral step on a uniform
    :math:`\lambda` grid):

    .. math::
        x_t = \frac{\alpha_t}{\alpha_s}x_s - 2\sigma_t(e^h - 1)\hat\epsilon(x_s, s)
              + \sigma_t\sqrt{e^{2h} - 1}\,z, \qquad z \sim N(0, I),

    then the data prediction at ``t_end`` (noise level zero). Unlike the ODE samplers the map from
    ``x_T`` is random, and the law converges only at first order, but errors made early are forgotten.
    Arguments as :func:`sample`, plus ``key`` for the fresh noise; ``nfe`` >= 1 evaluations.
    """
    x_T, t_start, t_end = _checked(model_fn, x_T, schedule, nfe, t_start, t_end)
    x0 = _sample(model_fn, x_T, schedule, t_start, t_end, key, method="ddim", nfe=nfe, steps="logSNR")
    return _finite(x0, check, f"ancestral sampling with nfe = {nfe}")


# -- the steppers: (model_fn, schedule, x, ts, evaluations) -> x at ts[-1] ---------------------------------


def _coefficients(schedule, s, t):
    return schedule.alpha(s), schedule.sigma(s), schedule.alpha(t), schedule.sigma(t), \
        schedule.lambda_(t) - schedule.lambda_(s)


def _ddim(model_fn, schedule, x, ts, evaluations):
    def body(x, st):
        s, t = st
        return _dpm1(model_fn, schedule, x, s, t, model_fn(x, s)), None

    return jax.lax.scan(body, x, (ts[:-1], ts[1:]))[0]


def _ancestral(model_fn, schedule, x, ts, key):
    def body(x, inputs):
        s, t, k = inputs
        a_s, _, a_t, s_t, h = _coefficients(schedule, s, t)
        z = jax.random.normal(k, x.shape, x.dtype)
        return (a_t / a_s * x - 2 * s_t * jnp.expm1(h) * model_fn(x, s)
                + s_t * jnp.sqrt(jnp.expm1(2 * h)) * z), None

    keys = jax.random.split(key, ts.shape[0] - 1)
    return jax.lax.scan(body, x, (ts[:-1], ts[1:], keys))[0]


def _dpm1(model_fn, sch, x, s, t, eps_s):
    a_s, _, a_t, s_t, h = _coefficients(sch, s, t)
    return a_t / a_s * x - s_t * jnp.expm1(h) * eps_s


def _dpm2(model_fn, sch, x, s, t, eps_s, r=0.5):
    """DPM-Solver-2 (Lu et al. 2022, algorithm 1): one intermediate point at lambda_s + r h."""
    a_s, _, a_t, s_t, h = _coefficients(sch, s, t)
    s1 = sch.t_of_lambda(sch.lambda_(s) + r * h)
    u = sch.alpha(s1) / a_s * x - sch.sigma(s1) * jnp.expm1(r * h) * eps_s
    d1 = model_fn(u, s1) - eps_s
    return a_t / a_s * x - s_t * jnp.expm1(h) * eps_s - s_t / (2 * r) * jnp.expm1(h) * d1


def _dpm3(model_fn, sch, x, s, t, eps_s, r1=1 / 3, r2=2 / 3):
    """DPM-Solver-3 (Lu et al. 2022, algorithm 2): intermediate points at r1 h and r2 h."""
    a_s, _, a_t, s_t, h = _coefficients(sch, s, t)
    lam_s = sch.lambda_(s)
    s1, s2 = sch.t_of_lambda(lam_s + r1 * h), sch.t_of_lambda(lam_s + r2 * h)
    u1 = sch.alpha(s1) / a_s * x - sch.sigma(s1) * jnp.expm1(r1 * h) * eps_s
    d1 = model_fn(u1, s1) - eps_s
    u2 = (sch.alpha(s2) / a_s * x - sch.sigma(s2) * jnp.expm1(r2 * h) * eps_s
          - sch.sigma(s2) * r2 / r1 * (jnp.expm1(r2 * h) / (r2 * h) - 1) * d1)
    d2 = model_fn(u2, s2) - eps_s
    return a_t / a_s * x - s_t * jnp.expm1(h) * eps_s - s_t / r2 * (jnp.expm1(h) / h - 1) * d2


_DPM_STEPS = {1: _dpm1, 2: _dpm2, 3: _dpm3}


def _singlestep(order: int):
    """DPM-Solver-``order`` steps; the last step spends what is left of the evaluations (order <= k)."""

    def stepper(model_fn, schedule, x, ts, evaluations):
        n_steps = ts.shape[0] - 1
        last = evaluations - order * (n_steps - 1)

        def body(x, st):
            s, t = st
            return _DPM_STEPS[order](model_fn, schedule, x, s, t, model_fn(x, s)), None

        x = jax.lax.scan(body, x, (ts[:-2], ts[1:-1]))[0]
        s, t = ts[-2], ts[-1]
        return _DPM_STEPS[last](model_fn, schedule, x, s, t, model_fn(x, s))

    return stepper


def _dpm_solver_pp_2m(model_fn, schedule, x, ts, evaluations):
    def data(x, t):
        return (x - schedule.sigma(t) * model_fn(x, t)) / schedule.alpha(t)

    def update(x, s, t, d):
        _, s_s, a_t, s_t, h = _coefficients(schedule, s, t)
        return s_t / s_s * x - a_t * jnp.expm1(-h) * d

    x0_first = data(x, ts[0])
    x = update(x, ts[0], ts[1], x0_first)  # first step: first order

    def body(carry, i):
        x, x0_prev, h_prev = carry
        s, t = ts[i], ts[i + 1]
        x0 = data(x, s)
        h = schedule.lambda_(t) - schedule.lambda_(s)
        r = h_prev / h
        d = (1 + 1 / (2 * r)) * x0 - 1 / (2 * r) * x0_prev
        return (update(x, s, t, d), x0, h), None

    h0 = schedule.lambda_(ts[1]) - schedule.lambda_(ts[0])
    (x, _, _), _ = jax.lax.scan(body, (x, x0_first, h0), jnp.arange(1, ts.shape[0] - 1))
    return x


def _dpm_solver_pp_3m(model_fn, schedule, x, ts, evaluations):
    """DPM-Solver++(3M): first-order, then second-order, then third-order multistep updates."""
    lam = schedule.lambda_(ts)

    def data(x, t):
        return (x - schedule.sigma(t) * model_fn(x, t)) / schedule.alpha(t)

    def update(x, i, x0, x0_1, x0_2, order):
        s, t = ts[i], ts[i + 1]
        h = lam[i + 1] - lam[i]
        phi1 = jnp.expm1(-h)
        phi2 = phi1 / h + 1.0
        phi3 = phi2 / h - 0.5
        d1 = d2 = jnp.zeros_like(x0)
        if order >= 2:
            r0 = (lam[i] - lam[i - 1]) / h
            d1_0 = (x0 - x0_1) / r0
            d1 = d1_0
            if order == 3:
                r1 = (lam[i - 1] - lam[i - 2]) / h
                d1_1 = (x0_1 - x0_2) / r1
                d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
        a_t, s_t, s_s = schedule.alpha(t), schedule.sigma(t), schedule.sigma(s)
        return s_t / s_s * x - a_t * (phi1 * x0 - phi2 * d1 + phi3 * d2)

    n_steps = ts.shape[0] - 1
    history = []  # the data predictions so far, newest last (at most three kept)
    for i in range(min(n_steps, 2)):  # warm-up: orders 1 and 2
        history.append(data(x, ts[i]))
        x = update(x, i, history[-1], history[-2] if i else None, None, i + 1)
    if n_steps <= 2:
        return x

    def body(carry, i):
        x, x0_1, x0_2 = carry
        x0 = data(x, ts[i])
        return (update(x, i, x0, x0_1, x0_2, 3), x0, x0_1), None

    (x, _, _), _ = jax.lax.scan(body, (x, history[-1], history[-2]), jnp.arange(2, n_steps))
    return x


def _euler(model_fn, schedule, x, ts, evaluations):
    def velocity(x, t):
        dlog_alpha = jax.grad(lambda u: jnp.log(schedule.alpha(u)))(t)
        dsigma = jax.grad(schedule.sigma)(t)
        return dlog_alpha * x + (dsigma - schedule.sigma(t) * dlog_alpha) * model_fn(x, t)

    def body(x, st):
        s, t = st
        return x + (t - s) * velocity(x, s), None

    return jax.lax.scan(body, x, (ts[:-1], ts[1:]))[0]


def _heun(model_fn, schedule, x, ts, evaluations):
    """EDM's Heun in (x/alpha, sigma/alpha); the last step Euler when the evaluations run out."""

    def scaled(t):
        return schedule.sigma(t) / schedule.alpha(t)

    def eps(xs, t):  # the noise prediction at the scaled state
        return model_fn(schedule.alpha(t) * xs, t)

    n_steps = ts.shape[0] - 1
    heun_steps = evaluations // 2  # n_steps - heun_steps is 0 or 1
    xs = x / schedule.alpha(ts[0])

    def body(xs, st):
        s, t = st
        d = eps(xs, s)
        pred = xs + (scaled(t) - scaled(s)) * d
        return xs + (scaled(t) - scaled(s)) * 0.5 * (d + eps(pred, t)), None

    xs = jax.lax.scan(body, xs, (ts[:heun_steps], ts[1:heun_steps + 1]))[0]
    for k in range(heun_steps, n_steps):  # at most one Euler step
        s, t = ts[k], ts[k + 1]
        xs = xs + (scaled(t) - scaled(s)) * eps(xs, s)
    return schedule.alpha(ts[-1]) * xs


_STEPPERS = {
    "ddim": _ddim,
    "dpm_solver_2": _singlestep(2),
    "dpm_solver_3": _singlestep(3),
    "dpm_solver++_2m": _dpm_solver_pp_2m,
    "dpm_solver++_3m": _dpm_solver_pp_3m,
    "euler": _euler,
    "heun": _heun,
}
