r"""Searched solver schedules: step locations and a per-step solver, optimised at a fixed NFE.

Liu, Ning, et al., "A Unified Sampling Framework for Solver Searching of Diffusion Probabilistic
Models" (USF, arXiv:2312.07243, ICLR 2024) write a fast sampler as a *solver schedule*: per step, the
time it steps to and how it steps (prediction type, Taylor order, derivative estimate, ...), and
search that schedule (their :math:`S^3` search) against the terminal error on a few reference
trajectories. This module does the same on a smaller space, with gradients where the choice is
continuous (as in Xue et al., "Accelerating Diffusion Sampling with Optimized Time Steps", CVPR
2024, and Sabour et al., "Align Your Steps", 2024, who optimise the step locations alone):

* **Step locations.** With :math:`\lambda = \log(\alpha/\sigma)`, the :math:`n = \text{nfe} - 1`
  main-loop steps split :math:`[\lambda_{\text{start}}, \lambda_{\text{end}}]` into increments

  .. math::
      \lambda_i = \lambda_{\text{start}} + (\lambda_{\text{end}} - \lambda_{\text{start}})
          \sum_{j < i} w_j, \qquad w = w_{\min} + (1 - n w_{\min})\,\operatorname{softmax}(\theta),

  so for any logits :math:`\theta \in \mathbb R^n` the times :math:`t_i = t(\lambda_i)` decrease
  strictly from ``t_start`` to ``t_end`` (end points exact); :math:`\theta = 0` is uniform log-SNR.
* **Per-step solver.** Step :math:`i` (from :math:`s = t_i` to :math:`t = t_{i+1}`,
  :math:`h = \lambda_t - \lambda_s`) is a DPM-Solver++ multistep update (Lu et al. 2022b) on the data
  prediction :math:`\hat x_{0}` of order :math:`k_i \in \{1, 2, 3\}` (at most :math:`i + 1`: the
  earlier data predictions it needs must exist):

  .. math::
      x_t = \frac{\sigma_t}{\sigma_s} x_s - \alpha_t\big(\varphi_1 \hat x_{0,s} - c_i D_1 + \varphi_3 D_2\big),
      \quad \varphi_1 = e^{-h} - 1,\ \varphi_2 = \frac{\varphi_1}{h} + 1,\ \varphi_3 = \frac{\varphi_2}{h} - \frac12,

  with :math:`D_1 = D_2 = 0` at order 1 (DDIM), :math:`D_1 = (\hat x_{0,s} - \hat x_{0,s'})/r_0` at
  order 2 and, at order 3, :math:`D_1 = d_0 + \frac{r_0}{r_0 + r_1}(d_0 - d_1)`,
  :math:`D_2 = \frac{d_0 - d_1}{r_0 + r_1}` from the divided differences :math:`d_0, d_1` of the last
  three data predictions (:math:`r_0 h, r_1 h` the previous steps in :math:`\lambda`). A second
  discrete choice, the *variant* :math:`v_i` of an order-2 step, picks the weight of :math:`D_1`:
  :math:`c_i = -\varphi_1/2` (:math:`v_i = 0`, DPM-Solver++(2M)) or :math:`c_i = \varphi_2` (:math:`v_i = 1`,
  the exact integral of the linear interpolant, DPM-Solver++(3M)'s warm-up step). Order 3 uses
  :math:`c_i = \varphi_2`. So ``orders = [1, 2, 2, ...]``, variants 0, is DPM-Solver++(2M) and
  ``orders = [1, 2, 3, 3, ...]``, variant 1 at step 1, is DPM-Solver++(3M) on the same times.

**The search** (:func:`search_schedule`) minimises the RMS terminal error against the reference
endpoints (:func:`~solverlab.diffusion.reference.reference`, from the same noise):
it starts from the best fixed placement (uniform log-SNR, time or Karras) of DPM-Solver++(2M), then
alternates Adam (optax) on :math:`\theta` by gradients through :func:`~solverlab.diffusion.sample`
(static NFE: the loops are scans) with a greedy coordinate sweep over the per-step (order, variant),
and returns the best schedule it evaluated, so never a worse one than where it started.

**Using it.** ``sample(model_fn, x_T, schedule, "searched", nfe, fitted=searched)`` runs the searched
solver on the searched times; ``sample(..., method="dpm_solver++_2m", steps=searched.times)`` (or
``fitted=searched``) runs any one-evaluation-per-step method on the searched times.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..errors import SolverError, check_range, concrete_value
from .reference import reference
from .samplers import coefficients, data_prediction, register, sample
from .schedules import timesteps

__all__ = [
    "SearchedSchedule", "logits_from_times", "multistep", "search_schedule", "searched_terminal_error",
    "times_from_logits",
]

#: Smallest fraction of the log-SNR interval one step covers (keeps the times strictly decreasing).
W_MIN_FRACTION = 1e-4
PLACEMENTS = ("logSNR", "time", "karras")
#: The per-step choices (order, variant) the coordinate sweep tries.
CHOICES = ((1, 0), (2, 0), (2, 1), (3, 0))


class SearchedSchedule(eqx.Module):
    r"""A solver schedule for ``nfe`` evaluations: the preparation result of the ``"searched"`` method.

    Fields:
        times: ``(nfe,)`` strictly decreasing main-loop times :math:`t_0 = t_{\text{start}} > \dots >
            t_{n} = t_{\text{end}}`, :math:`n = \text{nfe} - 1` (``sample`` uses them automatically).
        orders: ``(nfe - 1,)`` int, the DPM-Solver++ multistep order :math:`k_i \in \{1, 2, 3\}` of step
            :math:`i` (capped at :math:`i + 1`).
        variants: ``(nfe - 1,)`` int in :math:`\{0, 1\}`, the second-order weight (see the module docstring).
        fit_error: RMS terminal error of this schedule on the fitting set.
        initial_error: the same for the initialisation (the best fixed placement of DPM-Solver++(2M)).
        nfe: the number of model evaluations it is for (static).
        initial: the name of the fixed placement the search started from (static).
    """

    times: jax.Array
    orders: jax.Array
    variants: jax.Array
    fit_error: jax.Array
    initial_error: jax.Array
    nfe: int = eqx.field(static=True)
    initial: str = eqx.field(static=True, default="logSNR")

    def __check_init__(self):
        n = self.nfe - 1
        if jnp.shape(self.times) != (self.nfe,) or jnp.shape(self.orders) != (n,) or jnp.shape(self.variants) != (n,):
            raise ValueError(f"a SearchedSchedule for nfe = {self.nfe} needs times of shape ({self.nfe},) and orders, "
                             f"variants of shape ({n},), got {jnp.shape(self.times)}, {jnp.shape(self.orders)}, "
                             f"{jnp.shape(self.variants)}")
        check_range("orders", self.orders, low=1, high=3)
        check_range("variants", self.variants, low=0, high=1)
        times = concrete_value(self.times)
        if times is not None and not bool(np.all(np.diff(times) < 0)):
            raise ValueError("times of a SearchedSchedule must be strictly decreasing")


# -- the stepper ------------------------------------------------------------------------------------------------


def _phis(h):
    r""":math:`\varphi_1, \varphi_2, \varphi_3` of the module docstring. For :math:`|h| < 1/2` the closed
    forms of :math:`\varphi_2, \varphi_3` cancel catastrophically (in float32 badly), so there they are
    summed from their series :math:`\varphi_2 = \sum_{k \ge 2} (-1)^k h^{k-1}/k!`,
    :math:`\varphi_3 = \sum_{k \ge 3} (-1)^k h^{k-2}/k!` (to :math:`k = 14`: truncation below
    :math:`10^{-13}` relative)."""
    small = jnp.abs(h) < 0.5
    hs = jnp.where(small, 1.0, h)  # a safe h for the closed forms (keeps their gradients finite)
    phi1 = jnp.expm1(-h)
    series2 = sum((-1) ** k * h ** (k - 1) / float(math.factorial(k)) for k in range(2, 15))
    series3 = sum((-1) ** k * h ** (k - 2) / float(math.factorial(k)) for k in range(3, 15))
    closed2 = jnp.expm1(-hs) / hs + 1.0
    return phi1, jnp.where(small, series2, closed2), jnp.where(small, series3, closed2 / hs - 0.5)


def multistep(model_fn, schedule, x, grid, orders, variants):
    r"""DPM-Solver++ multistep with a per-step order and second-order variant (module docstring) over the
    main loop of ``grid``; returns :math:`x` at ``grid.t(grid.n)``. ``orders``, ``variants``: ``(grid.n,)``.
    Masked terms use safe denominators, so gradients stay finite through ``jnp.where``."""

    def body(i, carry):
        x, x0_1, x0_2, lam_1, lam_2 = carry  # the two previous data predictions and their lambdas
        s, t = grid.t(i), grid.t(i + 1)
        _, s_s, a_t, s_t, h = coefficients(schedule, s, t)
        lam_s = schedule.lambda_(s)
        x0 = data_prediction(model_fn, schedule, x, s)
        order = jnp.minimum(orders[i], i + 1)
        phi1, phi2, phi3 = _phis(h)
        two, three = order >= 2, order == 3
        r0 = jnp.where(two, (lam_s - lam_1) / h, 1.0)
        r1 = jnp.where(three, (lam_1 - lam_2) / h, 1.0)
        d0 = (x0 - x0_1) / r0
        d1 = (x0_1 - x0_2) / r1
        D1 = jnp.where(three, d0 + r0 / (r0 + r1) * (d0 - d1), jnp.where(two, d0, 0.0))
        D2 = jnp.where(three, (d0 - d1) / (r0 + r1), 0.0)
        c = jnp.where((order == 2) & (variants[i] == 0), -0.5 * phi1, phi2)
        x = s_t / s_s * x - a_t * (phi1 * x0 - c * D1 + phi3 * D2)
        return x, x0, x0_1, lam_s, lam_1

    lam0 = grid.lam(0)  # placeholders the warm-up steps mask out
    zeros = jnp.zeros_like(x)
    return jax.lax.fori_loop(0, grid.n, body, (x, zeros, zeros, lam0, lam0))[0]


def _searched_stepper(model_fn, schedule, x, grid, evaluations, fitted):
    n = grid.n
    if not isinstance(n, (int, np.integer)):
        raise ValueError("method 'searched' needs a concrete (Python int) nfe: its schedule is for one nfe")  # noqa: TRY004
    evaluations = concrete_value(evaluations)  # None for a traced nfe (then sample matched it to the times)
    if fitted.orders.shape[0] != n or (evaluations is not None and int(evaluations) + 1 != fitted.nfe):
        got = n + 1 if evaluations is None else int(evaluations) + 1
        raise ValueError(f"the searched schedule is for nfe = {fitted.nfe}, got nfe = {got}")
    return multistep(model_fn, schedule, x, grid, fitted.orders, fitted.variants)


register("searched", _searched_stepper, 1, fitted=SearchedSchedule)


# -- the parametrisation of the times --------------------------------------------------------------------------


def times_from_logits(schedule, theta, t_start, t_end):
    r"""Strictly decreasing times ``(n + 1,)`` from ``t_start`` to ``t_end`` (exact) from logits ``theta``
    ``(n,)``: increments in :math:`\lambda` proportional to
    :math:`w_{\min} + (1 - n w_{\min})\operatorname{softmax}(\theta)` (module docstring)."""
    n = theta.shape[0]
    w_min = W_MIN_FRACTION / n
    w = w_min + (1.0 - n * w_min) * jax.nn.softmax(theta)
    lam0, lam1 = schedule.lambda_(t_start), schedule.lambda_(t_end)
    frac = jnp.concatenate([jnp.zeros((1,), w.dtype), jnp.cumsum(w)])
    t = schedule.t_of_lambda(lam0 + frac * (lam1 - lam0))
    return t.at[0].set(t_start).at[-1].set(t_end)


def logits_from_times(schedule, times):
    """Logits whose :func:`times_from_logits` are ``times`` (a strictly decreasing array), up to the
    :math:`w_{\\min}` floor (increments below it are raised to it)."""
    lam = schedule.lambda_(jnp.asarray(times))
    dlam = jnp.diff(lam)
    n = dlam.shape[0]
    w_min = W_MIN_FRACTION / n
    w = (dlam / jnp.sum(dlam) - w_min) / (1.0 - n * w_min)
    return jnp.log(jnp.maximum(w, 1e-30))


# -- the objective ------------------------------------------------------------------------------------------------


def _rms(x, target):
    return jnp.sqrt(jnp.mean(jnp.sum((x - target) ** 2, axis=-1)))


def _objective(model_fn, schedule, x_fit, target, theta, orders, variants, t_start, t_end):
    """RMS terminal error of the schedule (logits ``theta``, per-step choices) on the fitting set."""
    nfe = theta.shape[0] + 1
    times = times_from_logits(schedule, theta, t_start, t_end)
    inf = jnp.asarray(jnp.inf, times.dtype)
    fitted = SearchedSchedule(times, orders, variants, inf, inf, nfe)
    x0 = sample(model_fn, x_fit, schedule, "searched", nfe, fitted=fitted, check=False)
    err = _rms(x0, target)
    return jnp.where(jnp.isfinite(err), err, jnp.inf)


#: Candidates evaluated together: the Adam starts of a round and the choices a sweep tries at one step.
BATCH = len(CHOICES)


@eqx.filter_jit
def _evaluate(model_fn, schedule, x_fit, target, thetas, orders, variants, t_start, t_end):
    """Objective and its gradient in the logits for a batch of candidates (``thetas``, ``orders``,
    ``variants``, each ``(BATCH, n)``). Every evaluation of the search goes through this one function,
    so it compiles once per ``nfe``. A non-finite gradient row is zeroed (that candidate stays put)."""
    value_and_grad = jax.value_and_grad(
        lambda th, o, v: _objective(model_fn, schedule, x_fit, target, th, o, v, t_start, t_end))
    values, grads = jax.vmap(value_and_grad)(thetas, orders, variants)
    ok = jnp.all(jnp.isfinite(grads), axis=-1, keepdims=True)
    return values, jnp.where(ok, grads, 0.0)


@jax.jit
def _adam_step(thetas, grads, state, learning_rate, values, best_thetas, best):
    """One Adam update of every start; remembers each start's best logits so far."""
    better = values < best
    best_thetas = jnp.where(better[:, None], thetas, best_thetas)
    best = jnp.where(better, values, best)
    updates, state = optax.adam(learning_rate).update(grads, state, thetas)
    return optax.apply_updates(thetas, updates), state, best_thetas, best


def _adam(evaluate, thetas, orders, variants, learning_rate, iterations):
    """``iterations`` Adam steps from each row of ``thetas`` with that row's choices ``orders``,
    ``variants`` (all ``(BATCH, n)``); the best row: its logits, objective and index."""
    state = optax.adam(learning_rate).init(thetas)
    best_thetas, best = thetas, jnp.full(thetas.shape[:1], jnp.inf, thetas.dtype)
    for it in range(iterations + 1):
        values, grads = evaluate(thetas, orders, variants)
        if it == iterations:  # the last iterate is evaluated, not updated
            grads = jnp.zeros_like(grads)
        thetas, state, best_thetas, best = _adam_step(thetas, grads, state, learning_rate, values, best_thetas, best)
    j = int(jnp.argmin(best))
    return best_thetas[j], float(best[j]), j


def _sweep(evaluate, theta, orders, variants, best, max_order):
    """One greedy coordinate pass over the steps' (order, variant), first step to last; keeps a change
    only if it lowers the objective. Every step tries all of :data:`CHOICES` (one not allowed at that
    step is replaced by the current choice), so the batch shape is fixed."""
    orders, variants = orders.copy(), variants.copy()
    thetas = jnp.broadcast_to(theta, (BATCH,) + theta.shape)
    for i in range(orders.shape[0]):
        allowed = [(o, v) if o <= min(max_order, i + 1) else (orders[i], variants[i]) for o, v in CHOICES]
        cand_o, cand_v = np.repeat(orders[None], BATCH, 0), np.repeat(variants[None], BATCH, 0)
        cand_o[:, i] = [o for o, _ in allowed]
        cand_v[:, i] = [v for _, v in allowed]
        errs = np.asarray(evaluate(thetas, cand_o, cand_v)[0])
        j = int(np.argmin(errs))
        if errs[j] < best:
            orders, variants, best = cand_o[j], cand_v[j], float(errs[j])
    return orders, variants, best


def searched_terminal_error(model_fn, schedule, x_T, searched: SearchedSchedule, target) -> jax.Array:
    """RMS terminal error of ``sample(..., "searched", fitted=searched)`` from ``x_T`` ``(n, d)`` against
    ``target`` ``(n, d)`` (e.g. reference endpoints from the same noise)."""
    x0 = sample(model_fn, x_T, schedule, "searched", searched.nfe, fitted=searched)
    return _rms(x0, jnp.asarray(target))


# -- the search ----------------------------------------------------------------------------------------------------


def search_schedule(model_fn: Callable, schedule, x_fit, nfe: int, *, t_start=None, t_end=None, target=None,
                    iterations: int = 100, learning_rate: float = 0.05, rounds: int = 2, max_order: int = 3,
                    rtol: float = 1e-7, atol: float = 1e-7) -> SearchedSchedule:
    r"""Search the step times and per-step solver of the ``"searched"`` method for ``nfe`` evaluations.

    Minimises the RMS terminal error
    :math:`\big(\tfrac1m\sum_j \|\hat x_0(x_T^{(j)}) - x_0^{\mathrm{ref}}(x_T^{(j)})\|^2\big)^{1/2}` on
    the fitting noise (USF/:math:`S^3`, Liu et al. 2023, with gradients for the times). It starts at the
    best of the uniform log-SNR, time and Karras placements of DPM-Solver++(2M); then, ``rounds`` times:
    one greedy sweep that sets each step's (order, variant), first step to last, to the best of
    :math:`(1, 0), (2, 0), (2, 1), (3, 0)` (orders up to ``max_order``) with the rest fixed, then
    ``iterations`` Adam steps on the log-SNR logits :math:`\theta` (gradients through
    :func:`~solverlab.diffusion.sample`) run in parallel from four starts (the best so far with its
    choices and with DPM-Solver++(2M)'s; the log-SNR and Karras placements with the current choices);
    and a last sweep. The best schedule evaluated is returned, so never one worse
    than the initialisation (``iterations = 0``: the discrete sweeps alone on the initial times).

    Args:
        model_fn: ``model_fn(x, t)`` -> noise prediction (an equinox module holding arrays, e.g. a
            guided :class:`~solverlab.diffusion.gmm.GMMModel`, is traced: a new guidance scale reuses
            the compiled search).
        schedule: the noise schedule.
        x_fit: ``(m, d)`` fitting noise at ``t_start`` (64 to 256 points is plenty).
        nfe: the number of model evaluations, an int >= 2 (``nfe - 1`` main-loop steps).
        t_start, t_end: as :func:`~solverlab.diffusion.sample` (defaults ``schedule.t_max``, ``t_min``).
        target: ``(m, d)`` reference endpoints from ``x_fit``; default the adaptive reference solve
            (:func:`~solverlab.diffusion.reference.reference` with ``rtol``, ``atol``).
        iterations: Adam steps per round (>= 0); learning_rate: Adam's step size (> 0);
        rounds: sweep + Adam phases (>= 1); max_order: 1, 2 or 3.

    Returns:
        A :class:`SearchedSchedule` (pass it to ``sample(..., "searched", nfe, fitted=...)``).
    """
    if isinstance(nfe, bool) or not isinstance(nfe, (int, np.integer)):
        raise ValueError(f"nfe must be an int in [2, inf), got {nfe!r}")  # noqa: TRY004
    check_range("nfe", nfe, low=2)
    for name, value in (("iterations", iterations), ("rounds", rounds)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"{name} must be an int, got {value!r}")  # noqa: TRY004
    check_range("iterations", iterations, low=0)
    check_range("rounds", rounds, low=1)
    check_range("learning_rate", learning_rate, low=0.0, low_open=True)
    if max_order not in (1, 2, 3):
        raise ValueError(f"max_order must be 1, 2 or 3, got {max_order!r}")
    x_fit = jnp.asarray(x_fit)
    if x_fit.ndim != 2 or x_fit.shape[0] < 1:
        raise ValueError(f"x_fit must be an (m, d) array of m >= 1 noise samples, got shape {x_fit.shape}")
    if target is not None and jnp.shape(target) != x_fit.shape:
        raise ValueError(f"target must have the shape of x_fit {x_fit.shape}, got {jnp.shape(target)}")
    t_start = schedule.t_max if t_start is None else t_start
    t_end = schedule.t_min if t_end is None else t_end
    if target is None:
        target = reference(model_fn, x_fit, schedule, rtol=rtol, atol=atol, t_start=t_start, t_end=t_end).x0
    dtype = x_fit.dtype
    target = jnp.asarray(target, dtype)
    t_start, t_end = jnp.asarray(t_start, dtype), jnp.asarray(t_end, dtype)
    n = int(nfe) - 1

    def evaluate(thetas, orders, variants):
        return _evaluate(model_fn, schedule, x_fit, target, thetas, orders, variants, t_start, t_end)

    # The initialisation: the best fixed placement of DPM-Solver++(2M) (orders 1, 2, 2, ..., variant 0).
    orders = np.minimum(np.arange(1, n + 1), min(2, max_order)).astype(np.int32)
    variants = np.zeros(n, np.int32)
    placements = [logits_from_times(schedule, timesteps(schedule, n, kind, t_start, t_end)) for kind in PLACEMENTS]
    starts = jnp.stack([placements[0]] + placements)  # BATCH rows: the best so far, then the placements
    init_errors = np.asarray(evaluate(starts, np.repeat(orders[None], BATCH, 0),
                                      np.repeat(variants[None], BATCH, 0))[0])[1:]
    k = int(np.argmin(init_errors))
    if not math.isfinite(init_errors[k]):
        raise SolverError(f"every fixed placement of dpm_solver++_2m at nfe = {nfe} gave a non-finite terminal "
                          "error on the fitting set; check the model and the fitting noise")
    theta, best = placements[k], float(init_errors[k])
    lr = jnp.asarray(learning_rate, dtype)

    pp2m = (orders.copy(), variants.copy())
    for _ in range(int(rounds)):
        orders, variants, best = _sweep(evaluate, theta, orders, variants, best, max_order)
        if iterations > 0:
            # Starts: the best so far with its choices and with DPM-Solver++(2M)'s, and the log-SNR and
            # Karras placements with the current choices (the times that suit a choice differ).
            starts = jnp.stack([theta, theta, placements[0], placements[2]])
            cand_o = np.stack([orders, pp2m[0], orders, orders])
            cand_v = np.stack([variants, pp2m[1], variants, variants])
            new_theta, value, j = _adam(evaluate, starts, cand_o, cand_v, lr, int(iterations))
            if value < best:
                theta, best, orders, variants = new_theta, value, cand_o[j], cand_v[j]
    orders, variants, best = _sweep(evaluate, theta, orders, variants, best, max_order)

    times = times_from_logits(schedule, theta, t_start, t_end)
    return SearchedSchedule(times, jnp.asarray(orders), jnp.asarray(variants), jnp.asarray(best, dtype),
                            jnp.asarray(init_errors[k], dtype), int(nfe), PLACEMENTS[k])
