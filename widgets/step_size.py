r"""Dashboard for chapter 02: SDE solvers and the step size, on the Brownian tree.

Three SDEs on :math:`[0, T]`, :math:`T = 1`, :math:`Y_0 = 1`, with the volatility :math:`\sigma` on a
slider:

* geometric Brownian motion (GBM), :math:`dY = \mu Y\,dt + \sigma Y\,dW` (Ito), exact solution
  :math:`Y_t = Y_0 \exp((\mu - \sigma^2/2) t + \sigma W_t)` read off the tree's :math:`W`;
* Ornstein-Uhlenbeck (OU), :math:`dY = -\theta Y\,dt + \sigma\,dW` (additive noise), against a fine
  ShARK solve (:math:`h = 2^{-11}`) on the same tree;
* Cox-Ingersoll-Ross (CIR), :math:`dX = a(b - X)\,dt + \sigma\sqrt{X}\,dW`, :math:`a = b = 1`, whose
  Stratonovich form has the drift :math:`a(\tilde b - X)`, :math:`\tilde b = b - \sigma^2/(4a)`
  (Jelincic, Foster & Kidger 2024, the CIR experiment, here on :math:`T = 1`), against the same
  solver at :math:`h = 2^{-11}` on the same tree. Its dedicated solvers, drift-implicit Euler and
  HOStS (:mod:`solverlab.sde.cir`), step by the paper's state rule when adaptive.

Each solver gets the SDE in the calculus it converges in (Ito for Euler-Maruyama and Milstein,
Stratonovich for stochastic Heun; with additive noise the two agree): one process, one exact
solution. ShARK needs additive noise, the CIR solvers solve only CIR, and adaptive steps need an
embedded error estimate (PI controller: Heun, ShARK) or the state rule (CIR solvers); other choices
are refused with a message (the core's own ``ValueError``, with what to pick instead).

The views:

1. the solved path over the exact or reference path of the same tree, ``key(seed)``
   (:func:`path_kernel`, :func:`reference_kernel`);
2. the strong error :math:`\mathbb E|Y^h_T - Y_T|` against the step :math:`h \in \{2^{-2}, \dots,
   2^{-9}\}` for every solver that applies, over ``N_PATHS`` fixed trees, in one vmapped kernel
   (:func:`sweep_kernel`), with the order theory gives each solver as a dashed line through its
   curve, the fitted orders (least squares and a bootstrap 95% interval, as
   :func:`solverlab.sde.fit_order`, over the steps whose error is above float32 round-off) in the
   legend, and this path's step and error marked;
3. the solve's statistics (accepted and rejected steps, drift evaluations, result code); a solve
   that fails (result != 0) shows the core's :class:`~solverlab.SolverError` message instead.

Every slider reaches the kernels as a traced float32/int32 scalar. The number of constant steps,
:math:`n = \mathrm{round}(T/h)`, is traced too: the constant-step solve runs over ``MAX_STEPS``
steps whose tail (steps :math:`k \ge n`) has zero length and is masked out, and the adaptive solve
is a ``while_loop`` over a fixed buffer. The SDE, the solver and adaptive on/off are traced indices
that pick a branch (``lax.switch``/``lax.cond``) of one executable per kernel, so everything
compiles in :func:`warm_up_kernels` (three executables) and no control recompiles afterwards.

The stepping loops are the core's (:func:`solverlab.sde.solve`) with the step count traced: the same
``solver.step`` and controller decisions, cross-checked against :func:`solverlab.sde.solve` in
``tests/widgets/test_dashboard_step_size.py``. The error sweep depends only on the SDE and
:math:`\sigma` and is cached; a step, tolerance, solver or seed move runs only the path solve.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import panel as pn
import param
from bokeh.models import BoxAnnotation, Span
from bokeh.plotting import figure

from solverlab import SolverError, sde
from solverlab.brownian import BrownianIncrement, BrownianTree

from ._base import Dashboard

__all__ = [
    "StepSizeDashboard",
    "EQUATIONS",
    "SOLVERS",
    "path_kernel",
    "reference_kernel",
    "sweep_kernel",
    "warm_up_kernels",
]

#: The time interval [0, T] and the initial value of every SDE.
T = 1.0
Y0 = 1.0
#: The tree resolves the path to 2^-15 (depth 15), the smallest step of the CIR state rule of
#: Jelincic, Foster & Kidger (2024): every query of the dashboard is exact in law.
TREE_TOL = 2.0**-15
#: Smallest adaptive step; below it the solve stops with result 2 (step-size underflow).
DT_MIN = TREE_TOL
#: Step buffer: constant steps down to 2^-10; adaptive solves accept at most this many steps ...
MAX_STEPS = 1024
#: ... in at most this many attempts (accepted + rejected); beyond either: result 1 (max steps).
MAX_ITERS = 4 * MAX_STEPS
#: The step sizes of the error sweep, and the number of paths it averages over.
SWEEP_LOG2 = np.arange(-2, -10, -1)
SWEEP_DTS = 2.0**SWEEP_LOG2
N_PATHS = 32
#: The sweep's trees are ``jax.random.split(jax.random.key(SWEEP_SEED), N_PATHS)``.
SWEEP_SEED = 20240
#: Reference solves (OU, CIR) take 2^11 steps; the path figure shows every other point.
REF_STEPS = 2048
DISPLAY_STEPS = 1024
#: Fixed drift parameters: GBM's mu, OU's theta, CIR's a and b (as in the paper's CIR experiment).
MU, THETA, CIR_A, CIR_B = 0.5, 2.0, 1.0, 1.0

_REF_DT = T / REF_STEPS
_T_DISPLAY = np.linspace(0.0, T, DISPLAY_STEPS + 1, dtype=np.float32)


# -- the SDEs ---------------------------------------------------------------------------------------
def _sqrt_pos(x):
    r""":math:`\sqrt{\max(x, 0)}` with derivative 0 for x <= 0 (Milstein differentiates it)."""
    positive = x > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, x, 1.0)), 0.0)


# GBM and OU take args = sigma; CIR takes args = (a, b, sigma), as solverlab.sde.cir does.
GBM_ITO = sde.SDE(lambda t, y, s: MU * y, lambda t, y, s: s * y, "diagonal", "ito")
GBM_STRAT = sde.SDE(lambda t, y, s: (MU - 0.5 * s * s) * y, lambda t, y, s: s * y, "diagonal", "stratonovich")
OU = sde.SDE(lambda t, y, s: -THETA * y, lambda t, y, s: s * jnp.ones_like(y), "additive", "ito")
# The generic solvers' CIR: solverlab.sde.cir's forms, but with a square root whose derivative is 0
# below zero. (Milstein differentiates the diffusion; d/dx sqrt(max(x, 0)) is NaN for x < 0, which
# Milstein reaches when sigma^2 > 4ab.)
CIR_ITO = sde.SDE(lambda t, y, p: p[0] * (p[1] - y), lambda t, y, p: p[2] * _sqrt_pos(y), "diagonal", "ito")
CIR_STRAT = sde.SDE(
    lambda t, y, p: p[0] * (sde.cir.b_tilde(p) - y), lambda t, y, p: p[2] * _sqrt_pos(y), "diagonal", "stratonovich"
)

#: Solver name -> instance, in the order of the menu and the error plot.
SOLVERS: dict[str, sde.AbstractSolver] = {
    "Euler-Maruyama": sde.EulerMaruyama(),
    "Milstein": sde.Milstein(),
    "Heun": sde.Heun(),
    "ShARK": sde.ShARK(),
    "drift-implicit Euler": sde.DriftImplicitEulerCIR(),
    "HOStS": sde.HOStS(),
}
#: The CIR solvers of the paper: they choose adaptive steps by its state rule, not by an error estimate.
STATE_RULE_SOLVERS = ("drift-implicit Euler", "HOStS")
_COLORS = {"Euler-Maruyama": "#3182bd", "Milstein": "#31a354", "Heun": "#e6550d", "ShARK": "#756bb1",
           "drift-implicit Euler": "#8c6d31", "HOStS": "#c51b8a"}


@dataclasses.dataclass(frozen=True)
class Equation:
    """One SDE of the dashboard in its Ito and Stratonovich forms, and what it is checked against.

    ``reference``: ``"exact"`` (``exact(t, W_t, sigma)``), ``"ShARK"`` (a fine ShARK solve) or
    ``"same"`` (the solver itself at ``h = T / REF_STEPS``), all on the same tree. ``args(sigma)``:
    the ``args`` its drift and diffusion take.
    """

    name: str
    formula: str
    ito: sde.SDE
    stratonovich: sde.SDE
    reference: str
    exact: Callable | None = None
    args: Callable = lambda sigma: sigma
    #: Orders that differ from the solver's nominal ``strong_order``: name -> (order, why).
    orders: tuple = ()
    #: The SDE objects the dedicated CIR solvers accept (they check for them by identity).
    special_form: sde.SDE | None = None

    def form(self, solver: sde.AbstractSolver) -> sde.SDE:
        """The SDE as ``solver`` needs it: Ito unless the solver converges to Stratonovich only."""
        if self.special_form is not None and isinstance(solver, (sde.DriftImplicitEulerCIR, sde.HOStS)):
            return self.special_form
        if self.ito.noise == "additive" or "ito" in solver.calculi:
            return self.ito
        return self.stratonovich

    def applies(self, solver: sde.AbstractSolver) -> bool:
        try:
            solver.check(self.form(solver))
        except ValueError:
            return False
        return True

    def theory(self, name: str) -> tuple[float, str]:
        """The strong order theory gives ``name`` here, and a note when it is not the nominal one."""
        special = dict(self.orders)
        if name in special:
            order, why = special[name]
            return order, f" ({why})"
        solver = SOLVERS[name]
        return solver.strong_order[self.form(solver).noise], ""

    @functools.cached_property
    def solvers(self) -> tuple[str, ...]:
        """Names of the solvers that can solve this SDE (the rows of the error sweep)."""
        return tuple(name for name, solver in SOLVERS.items() if self.applies(solver))

    def adaptive_solvers(self) -> tuple[str, ...]:
        """The solvers that can choose their own steps here: an error estimate or the state rule."""
        return tuple(name for name in self.solvers if SOLVERS[name].error_estimate or name in STATE_RULE_SOLVERS)


EQUATIONS: dict[str, Equation] = {
    "GBM": Equation(
        "GBM", f"geometric Brownian motion dY = {MU:g} Y dt + σ Y dW (Ito)", GBM_ITO, GBM_STRAT, "exact",
        exact=lambda t, w, s: Y0 * jnp.exp((MU - 0.5 * s * s) * t + s * w),
    ),
    # ShARK is order 3/2 for additive noise; with a linear drift its h^(3/2) terms cancel (it
    # integrates the drift's action on the noise exactly, through H), leaving order 2.
    "OU": Equation("OU", f"Ornstein-Uhlenbeck dY = -{THETA:g} Y dt + σ dW", OU, OU, "ShARK",
                   orders=(("ShARK", (2.0, "linear drift")),)),
    # Theory's orders hold while Feller's condition 2ab >= sigma^2 holds (sigma <= 1.41 here).
    "CIR": Equation(
        "CIR", f"Cox-Ingersoll-Ross dX = a(b - X) dt + σ √X dW, a = {CIR_A:g}, b = {CIR_B:g}; Stratonovich drift "
        "a(b̃ - X), b̃ = b - σ²/4a", CIR_ITO, CIR_STRAT, "same",
        args=lambda sigma: (CIR_A, CIR_B, sigma), special_form=sde.cir.cir_sde("stratonovich"),
    ),
}


def check_choice(equation: str, solver: str, adaptive: bool) -> None:
    """``ValueError`` saying what to pick instead when ``solver`` (adaptive or not) cannot solve ``equation``."""
    eq, method = EQUATIONS[equation], SOLVERS[solver]
    try:
        method.check(eq.form(method))
    except ValueError as exc:
        why = ("it steps the exact flows of the CIR drift and noise, so it solves only CIR"
               if solver in STATE_RULE_SOLVERS else str(exc))
        raise ValueError(
            f"{solver} cannot solve {equation}: {why}. For {equation} pick one of: {', '.join(eq.solvers)}."
        ) from None
    if adaptive and solver not in eq.adaptive_solvers():
        raise ValueError(
            f"{solver} has no embedded error estimate, so it cannot choose its own steps: switch "
            f"adaptive off, or pick {' or '.join(eq.adaptive_solvers())}."
        )


def controller(solver: str, tol):
    r"""The step controller of ``solver`` at tolerance ``tol`` (may be traced), None if it has none.

    An embedded error estimate: :class:`~solverlab.sde.PIController` with ``rtol = atol = tol``.
    The CIR solvers: the paper's state rule :math:`h = \mathrm{clip}((\max(X, 0)\,c)^{2/3},
    2^{-15}, T)` with :math:`c = ` ``tol``, with its rejection test
    (:class:`solverlab.sde.cir.PaperStateController`).
    """
    if SOLVERS[solver].error_estimate:
        return sde.PIController(rtol=tol, atol=tol, dt_min=DT_MIN)
    if solver in STATE_RULE_SOLVERS:
        return sde.cir.PaperStateController(sde.cir.StepRule(tol), dt_min=DT_MIN, dt_max=T)
    return None


# -- kernels ------------------------------------------------------------------------------------------
# The SDE and the solver are traced indices too: every (equation, solver) pair is a branch of one
# executable per kernel, and the Brownian tree, the costly part to compile, appears once per kernel
# (its queries do not depend on the SDE). Two executables hold every variant the controls can reach.

#: The (equation, solver) pairs the kernels solve, in branch order; PAIR_INDEX[e, s] is the branch of
#: equation e and solver s (indices into EQUATIONS and SOLVERS), -1 where the solver does not apply.
PAIRS = tuple((e, s) for e, eq in enumerate(EQUATIONS.values()) for s, name in enumerate(SOLVERS)
              if name in eq.solvers)
PAIR_INDEX = np.full((len(EQUATIONS), len(SOLVERS)), -1, np.int32)
for _i, (_e, _s) in enumerate(PAIRS):
    PAIR_INDEX[_e, _s] = _i


def _pair(i: int) -> tuple[Equation, str, sde.AbstractSolver, sde.SDE]:
    e, s = PAIRS[i]
    eq, name = list(EQUATIONS.values())[e], list(SOLVERS)[s]
    return eq, name, SOLVERS[name], eq.form(SOLVERS[name])


def _tree(key, tol: float = TREE_TOL) -> BrownianTree:
    """A path of the dashboard: a scalar Brownian motion on [0, T] with space-time Levy area (for ShARK).

    The path shown uses ``tol = TREE_TOL``; the sweep's trees are only queried on the reference grid
    and use ``tol = T / REF_STEPS`` (a shallower tree, the same path at those times, faster queries).
    """
    return BrownianTree(0.0, T, tol, (), key, levy_area="space-time")


def _masked_steps(form, solver, y0, starts, hs, incs, active, args):
    """Steps ``y -> solver.step(y)`` over the arrays ``starts``, ``hs`` and ``incs``; where ``active``
    is False the state stays put. Returns the states after each step, shape (n,)."""

    def step(y, x):
        t, h, w, hh, on = x
        y_next, _ = solver.step(form, t, y, h, BrownianIncrement(w, hh), args)
        y_next = jnp.where(on, y_next, y)
        return y_next, y_next

    _, ys = jax.lax.scan(step, y0, (starts, hs, incs.W, incs.H, active))
    return ys


def _drift_evals(pair):
    return jnp.asarray([_pair(i)[2].drift_evals for i in range(len(PAIRS))], jnp.int32)[pair]


def _constant(tree, dt, sigma, pair):
    """Constant steps ``h = T / n``, ``n = round(T / dt)`` (traced) in a buffer of MAX_STEPS steps.

    One batched tree query gives every increment (zero-length past step n); the solver runs over all
    MAX_STEPS with the tail masked out, so a new ``dt`` changes values, never shapes.
    """
    dtype = tree.t0.dtype
    n = jnp.clip(jnp.round(T / dt), 1, MAX_STEPS).astype(jnp.int32)
    h = jnp.asarray(T, dtype) / n
    k = jnp.arange(MAX_STEPS, dtype=jnp.int32)
    active = k < n
    starts = jnp.minimum(k * h, T)
    ends = jnp.where(k == n - 1, T, jnp.minimum((k + 1) * h, T))
    incs = tree.evaluate(starts, ends)
    y0 = jnp.asarray(Y0, dtype)

    def run(i):
        eq, _, solver, form = _pair(i)
        return lambda: _masked_steps(form, solver, y0, starts, ends - starts, incs, active, eq.args(sigma))

    ys = jnp.concatenate([y0[None], jax.lax.switch(pair, [run(i) for i in range(len(PAIRS))])])
    ts = jnp.where(jnp.arange(MAX_STEPS + 1) <= n, jnp.concatenate([jnp.zeros((1,), dtype), ends]), jnp.nan)
    ys = jnp.where(jnp.isnan(ts), jnp.nan, ys)
    finite = jnp.isfinite(ys) | jnp.isnan(ts)
    ok = jnp.all(finite)
    n_steps = jnp.where(ok, n, jnp.maximum(jnp.argmin(finite) - 1, 0))
    return {
        "ts": ts, "ys": ys, "y1": ys[n], "n_steps": n_steps, "accepted": n, "rejected": jnp.int32(0),
        "nfe": n * _drift_evals(pair), "result": jnp.where(ok, 0, 3),
    }


def _adaptive(tree, dt0, tol, sigma, pair):
    """Adaptive steps from ``dt0``, as :func:`solverlab.sde.solve` takes them, with the solver's
    :func:`controller` at tolerance ``tol`` (traced).

    One tree query per attempt; a rejected step asks the same tree for a shorter increment. A step
    that would leave less than DT_MIN before T is stretched to T (in float32 the time would otherwise
    end on a sliver of a step). Only pairs with a controller are sent here.
    """
    dtype = tree.t0.dtype
    t1 = jnp.asarray(T, dtype)
    y0 = jnp.asarray(Y0, dtype)
    ts = jnp.full((MAX_STEPS + 1,), jnp.nan, dtype).at[0].set(0.0)
    ys = jnp.full((MAX_STEPS + 1,), jnp.nan, dtype).at[0].set(y0)

    def attempt(i):
        """Branch i: one step and the controller's verdict, ``(y_next, accept, h_next, c_state)``."""
        eq, name, solver, form = _pair(i)
        ctrl, args = controller(name, tol), eq.args(sigma)

        def step(t, y, h, inc, c_state):
            y_next, y_err = solver.step(form, t, y, h, inc, args)
            if ctrl is None:  # never sent here (check_choice); keeps the branch signatures equal
                return y_next, jnp.asarray(True), h, c_state
            accept, h_next, c_state = ctrl.decide(t, y, y_next, y_err, h, c_state)
            return y_next, accept, jnp.asarray(h_next, dtype), c_state

        return step

    def first(i):
        ctrl = controller(_pair(i)[1], tol)
        return lambda: jnp.asarray(dt0 if ctrl is None else ctrl.first_step(0.0, y0, dt0), dtype)

    steps = [attempt(i) for i in range(len(PAIRS))]
    drift_evals = _drift_evals(pair)

    def cond(state):
        t, _, _, _, n, rejected, _, _, _, result = state
        return (t < t1) & (n < MAX_STEPS) & (n + rejected < MAX_ITERS) & (result == 0)

    def body(state):
        t, y, h, c_state, n, rejected, nfe, ts, ys, result = state
        h = jnp.minimum(h, t1 - t)
        h = jnp.where(t1 - (t + h) < DT_MIN, t1 - t, h)
        inc = tree.evaluate(t, t + h)
        y_next, accept, h_new, c_state = jax.lax.switch(pair, steps, t, y, h, inc, c_state)
        t_new = jnp.where(accept, jnp.where(t + h >= t1, t1, t + h), t)
        y_new = jnp.where(accept, y_next, y)
        n_new = n + accept.astype(n.dtype)
        ts = jnp.where(accept, ts.at[n_new].set(t_new), ts)
        ys = jnp.where(accept, ys.at[n_new].set(y_new), ys)
        result = jnp.where(accept & ~jnp.isfinite(y_next), 3, result)
        result = jnp.where((h_new < DT_MIN * (1 - 1e-6)) & (t_new < t1), 2, result)
        rejected = rejected + (~accept).astype(n.dtype)
        return t_new, y_new, h_new, c_state, n_new, rejected, nfe + drift_evals, ts, ys, result

    zero = jnp.int32(0)
    h0 = jnp.minimum(jax.lax.switch(pair, [first(i) for i in range(len(PAIRS))]), t1)
    init = (jnp.asarray(0.0, dtype), y0, h0, jnp.asarray(1.0, dtype), zero, zero, zero, ts, ys, zero)
    t, y, _, _, n, rejected, nfe, ts, ys, result = jax.lax.while_loop(cond, body, init)
    result = jnp.where((result == 0) & (t < t1), 1, result)
    return {"ts": ts, "ys": ys, "y1": y, "n_steps": n, "accepted": n, "rejected": rejected, "nfe": nfe,
            "result": result}


_INT_OUTPUTS = ("n_steps", "accepted", "rejected", "nfe", "result")


@jax.jit
def path_kernel(seed, log2_dt, log10_tol, sigma, equation, solver, adaptive):
    r"""One solve of SDE ``equation`` by ``solver`` on the tree of ``key(seed)``.

    Args:
        seed: int32. log2_dt: float32, the step (the first step when adaptive) is
            :math:`2^{\text{log2\_dt}}`. log10_tol: float32, the adaptive tolerance
            :math:`10^{\text{log10\_tol}}`. sigma: float32 volatility. equation, solver: int32
            indices into :data:`EQUATIONS` and :data:`SOLVERS` (a pair that :func:`check_choice`
            accepts). adaptive: bool.

    Returns:
        dict with ``ts``, ``ys`` (MAX_STEPS + 1,), NaN past ``n_steps``; ``y1``; ``n_steps``,
        ``accepted``, ``rejected``, ``nfe``, ``result`` (a code of :data:`solverlab.sde.RESULTS`).
    """
    tree = _tree(jax.random.key(seed))
    pair = jnp.maximum(jnp.asarray(PAIR_INDEX)[equation, solver], 0)
    dt = jnp.exp2(log2_dt)
    tol = jnp.power(10.0, log10_tol).astype(dt.dtype)

    def fix(out):
        return {k: jnp.asarray(v, jnp.int32) if k in _INT_OUTPUTS else v for k, v in out.items()}

    return jax.lax.cond(adaptive, lambda: fix(_adaptive(tree, dt, tol, sigma, pair)),
                        lambda: fix(_constant(tree, dt, sigma, pair)))


def _fine_increments(tree) -> BrownianIncrement:
    """The tree's increments over the REF_STEPS steps of the reference grid (one batched query)."""
    k = jnp.arange(REF_STEPS, dtype=jnp.int32)
    starts = (k * _REF_DT).astype(tree.t0.dtype)
    ends = jnp.where(k == REF_STEPS - 1, T, (k + 1) * _REF_DT).astype(tree.t0.dtype)
    return tree.evaluate(starts, ends)


def _fine_solve(solver, form, fine, args):
    """``solver`` at the reference step over the fine increments: states at the REF_STEPS + 1 grid times."""
    dtype = fine.W.dtype
    starts = jnp.arange(REF_STEPS, dtype=dtype) * _REF_DT
    hs = jnp.full((REF_STEPS,), _REF_DT, dtype)
    y0 = jnp.asarray(Y0, dtype)
    ys = _masked_steps(form, solver, y0, starts, hs, fine, jnp.ones((REF_STEPS,), bool), args)
    return jnp.concatenate([y0[None], ys])


def join_pairs(incs: BrownianIncrement) -> BrownianIncrement:
    r"""Join consecutive pairs of equal steps into steps twice as long (Chen's relation).

    For halves :math:`(W_1, H_1)`, :math:`(W_2, H_2)` of one step,
    :math:`W = W_1 + W_2` and :math:`H = 	frac12 (H_1 + H_2) + 	frac14 (W_1 - W_2)`: what
    :func:`solverlab.brownian.coarsen` gives with ``factor=2``, in closed form (no scan; the sweep
    joins 11 levels on every change of the SDE or sigma).
    """
    w, h = incs.W, incs.H
    return BrownianIncrement(w[0::2] + w[1::2], 0.5 * (h[0::2] + h[1::2]) + 0.25 * (w[0::2] - w[1::2]))


def _sweep_levels(fine: BrownianIncrement):
    """Increments of every sweep step size, joined from the fine ones, zero-padded to the finest
    level's length: W, H of shape (len(SWEEP_DTS), n_max), the step counts, and W over the whole of
    [0, T] (the last join)."""
    n_max = int(round(T / SWEEP_DTS.min()))
    levels = {}
    incs, n = fine, REF_STEPS
    while n > 1:
        incs, n = join_pairs(incs), n // 2
        levels[n] = incs
    counts = np.round(T / SWEEP_DTS).astype(int)

    def padded(x, count):
        return jnp.concatenate([x, jnp.zeros((n_max - count,), x.dtype)])

    w = jnp.stack([padded(levels[c].W, c) for c in counts])
    h = jnp.stack([padded(levels[c].H, c) for c in counts])
    return w, h, counts, n_max, levels[1].W[0]


def _reference(eq: Equation, name: str, fine: BrownianIncrement, sigma):
    """The exact or reference path on the reference grid (REF_STEPS + 1 points) for solver ``name``."""
    dtype = fine.W.dtype
    if eq.reference == "exact":
        t = jnp.arange(REF_STEPS + 1, dtype=dtype) * _REF_DT
        w = jnp.concatenate([jnp.zeros((1,), dtype), jnp.cumsum(fine.W)])
        return eq.exact(t, w, sigma)
    method = SOLVERS[eq.reference if eq.reference != "same" else name]
    return _fine_solve(method, eq.form(method), fine, eq.args(sigma))


@jax.jit
def reference_kernel(seed, sigma, equation, solver):
    """The exact or reference path of the tree of ``key(seed)`` for ``solver`` on ``equation``.

    Args:
        seed: int32. sigma: float32. equation, solver: int32 indices into :data:`EQUATIONS` and
            :data:`SOLVERS` (a pair :func:`check_choice` accepts).

    Returns:
        ``{"y": (DISPLAY_STEPS + 1,) on the display grid, "y1": the value at T}``.
    """
    fine = _fine_increments(_tree(jax.random.key(seed)))
    pair = jnp.maximum(jnp.asarray(PAIR_INDEX)[equation, solver], 0)

    def branch(i):
        eq, name, _, _ = _pair(i)
        return lambda: _reference(eq, name, fine, sigma)

    ys = jax.lax.switch(pair, [branch(i) for i in range(len(PAIRS))])
    return {"y": ys[:: REF_STEPS // DISPLAY_STEPS], "y1": ys[-1]}


def _sweep_equation(eq: Equation, fine, sigma):
    """One tree, one SDE: errors at T, shape (len(SOLVERS), len(SWEEP_DTS)); NaN rows for solvers
    that do not apply."""
    w, hh, counts, n_max, w_total = _sweep_levels(fine)
    args = eq.args(sigma)
    dtype = w.dtype
    k = jnp.arange(n_max)
    y0 = jnp.asarray(Y0, dtype)

    def final(solver, form, dt, count, w_l, h_l):
        active = k < count
        hs = jnp.where(active, dt, 0.0).astype(dtype)
        ys = _masked_steps(form, solver, y0, (k * dt).astype(dtype), hs, BrownianIncrement(w_l, h_l), active, args)
        return ys[-1]

    if eq.reference == "exact":
        truth = eq.exact(T, w_total, sigma)
    elif eq.reference != "same":
        truth = _reference(eq, eq.reference, fine, sigma)[-1]
    errors = []
    for name, solver in SOLVERS.items():
        if name not in eq.solvers:
            errors.append(jnp.full((len(SWEEP_DTS),), jnp.nan, dtype))
            continue
        form = eq.form(solver)
        y1 = jax.vmap(functools.partial(final, solver, form))(jnp.asarray(SWEEP_DTS, dtype), jnp.asarray(counts), w, hh)
        if eq.reference == "same":
            truth = _reference(eq, name, fine, sigma)[-1]
        errors.append(jnp.abs(y1 - truth))
    return jnp.stack(errors)


def sweep_keys():
    """The sweep's trees: ``jax.random.split(jax.random.key(SWEEP_SEED), N_PATHS)``, fixed (the seed
    slider picks the path shown, not these)."""
    return jax.random.split(jax.random.key(SWEEP_SEED), N_PATHS)


@jax.jit
def sweep_kernel(sigma, equation):
    r"""Strong errors :math:`|Y^h_T - Y_T|` of every solver at every step of SWEEP_DTS, for one SDE.

    ``N_PATHS`` trees with the keys of :func:`sweep_keys` (as
    :func:`solverlab.sde.strong_convergence` draws them from ``key(SWEEP_SEED)``). Each solver steps on
    the tree's increments over the reference grid (``h = T / REF_STEPS``) joined to each coarser step
    by Chen's relation, so every step size sees the same path; steps past a level's count have zero
    length and are masked.

    Args:
        sigma: float32. equation: int32 index into :data:`EQUATIONS`.

    Returns:
        (N_PATHS, len(SOLVERS), len(SWEEP_DTS)) absolute errors at T, NaN rows for solvers that do
        not apply.
    """

    def one_path(key):
        fine = _fine_increments(_tree(key, _REF_DT))
        branches = [functools.partial(_sweep_equation, eq, fine, sigma) for eq in EQUATIONS.values()]
        return jax.lax.switch(equation, branches)

    return jax.vmap(one_path)(sweep_keys())


@functools.cache
def warm_up_kernels() -> None:
    """Compile the three kernels (every SDE, solver and step mode is a branch inside), once per process."""
    seed, sigma, zero = np.int32(0), np.float32(0.5), np.int32(0)
    jax.block_until_ready(path_kernel(seed, np.float32(-5.0), np.float32(-2.0), sigma, zero, zero, np.bool_(False)))
    jax.block_until_ready(reference_kernel(seed, sigma, zero, zero))
    jax.block_until_ready(sweep_kernel(sigma, zero))


def roundoff_floor(dtype=np.float32) -> float:
    r"""Errors below this are rounding, not truncation: :math:`2\,\varepsilon\sqrt{N_{ref}}\,|Y|`
    with :math:`|Y| \approx 1`, the size of the rounding a solve of ``REF_STEPS`` steps accumulates
    (about 1e-5 in float32; high-order methods reach it within the sweep)."""
    return float(2.0 * np.finfo(dtype).eps * np.sqrt(REF_STEPS))


@functools.lru_cache(maxsize=64)
def sweep(equation: str, sigma: float) -> dict:
    """The error sweep and fitted orders of ``equation`` at volatility ``sigma`` (cached: no other
    control changes them).

    Returns ``errors``: solver name -> (len(SWEEP_DTS),) mean over the paths, for the solvers that
    apply; ``orders``: name -> ``(order, (lo, hi), levels used)`` from :func:`fit_orders` over the
    steps whose error is above ``floor`` (:func:`roundoff_floor`).
    """
    out = np.asarray(jax.device_get(sweep_kernel(np.float32(sigma), np.int32(list(EQUATIONS).index(equation)))))
    floor = roundoff_floor(out.dtype)
    errors, orders = {}, {}
    for i, name in enumerate(SOLVERS):
        if name not in EQUATIONS[equation].solvers:
            continue
        path_errors = out[:, i, :].astype(float)
        errors[name] = path_errors.mean(axis=0)
        above = errors[name] > floor
        orders[name] = (*fit_orders(SWEEP_DTS[above], path_errors[:, above]), int(above.sum()))
    return {"errors": errors, "orders": orders, "floor": floor}


@functools.lru_cache(maxsize=256)
def reference(equation: str, seed: int, sigma: float, solver: str) -> dict:
    """The exact or reference path shown (cached: the step and the tolerance do not change it)."""
    return jax.device_get(reference_kernel(np.int32(seed), np.float32(sigma), np.int32(list(EQUATIONS).index(equation)),
                                           np.int32(list(SOLVERS).index(solver))))


def fit_orders(dts: np.ndarray, path_errors: np.ndarray, n_boot: int = 400, seed: int = 0):
    r"""The strong order: least-squares slope of :math:`\log` (mean error) against :math:`\log h`,
    with a bootstrap 95% interval over the paths; NaN with fewer than 3 step sizes.

    The method of :func:`solverlab.sde.fit_order`, with the resamples in one vectorised NumPy
    expression (about 1 ms instead of tens of ms: it runs on every seed move).

    Args:
        dts: (n,) step sizes. path_errors: (n_paths, n) absolute errors at T.

    Returns:
        ``(order, (lo, hi))``.
    """
    if len(dts) < 3 or not (np.all(np.isfinite(path_errors)) and np.all(path_errors.mean(axis=0) > 0)):
        return np.nan, (np.nan, np.nan)
    x = np.log(dts)
    x = x - x.mean()

    def slope(mean_errors):
        y = np.log(mean_errors)
        return (y - y.mean(axis=-1, keepdims=True)) @ x / (x @ x)

    rows = np.random.default_rng(seed).integers(0, path_errors.shape[0], (n_boot, path_errors.shape[0]))
    boot = slope(path_errors[rows].mean(axis=1))
    return float(slope(path_errors.mean(axis=0))), (float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975)))


# -- the dashboard -------------------------------------------------------------------------------------
_FIGURE = dict(width=760, height=300, tools="", toolbar_location=None)


def _figure(title: str, **kwargs):
    fig = figure(title=title, **{**_FIGURE, **kwargs})
    fig.title.text_font_size = "13pt"
    return fig


def _legend_right(fig) -> None:
    legend = fig.legend[0]
    legend.label_text_font_size = "9pt"
    legend.padding = legend.margin = 2
    legend.spacing = 0
    legend.border_line_alpha = 0
    legend.background_fill_alpha = 0.7
    legend.location = "bottom_right"


def _order_line(dts: np.ndarray, errors: np.ndarray, order: float, floor: float) -> np.ndarray:
    """:math:`C h^p` through the geometric mean of the curve's points above the round-off floor:
    the slope theory predicts, where it can be seen."""
    above = errors > floor
    if not above.any():
        above = errors > 0
    log_c = np.mean(np.log(errors[above])) - order * np.mean(np.log(dts[above]))
    return np.exp(log_c) * dts**order


class StepSizeDashboard(Dashboard):
    """SDE solvers and the step size: solved path, strong error against the step, adaptive steps."""

    title = "SDE solvers and the step size"
    description = (
        "The solved path (dots) over the exact or reference path of the **same Brownian tree** (grey). "
        "The step is h = 2^(log2 dt). With **adaptive** on, a controller picks the steps, tol = 10^(log10 tol): "
        "a PI controller on the embedded error estimate (Heun, ShARK; rtol = atol = tol) or, for the CIR "
        "solvers, the state rule h = (X tol)^(2/3) of Jelincic, Foster & Kidger (2024). A rejected step asks "
        f"the same tree for a shorter increment. Below: mean error at T over {N_PATHS} paths against h for "
        "every solver that applies, dashed the order theory gives; grey, float32 round-off. Each solver sees "
        "the SDE in its own calculus (Ito: Euler-Maruyama, Milstein; Stratonovich: Heun). Try CIR at "
        "σ = 2.2, beyond Feller's condition: the orders drop, and Heun's Stratonovich drift traps paths below 0."
    )
    kernels = (path_kernel, reference_kernel, sweep_kernel)
    widgets = {
        "equation": {"type": pn.widgets.Select},
        "solver": {"type": pn.widgets.Select},
        "log2_dt": {"type": pn.widgets.FloatSlider, "step": 0.25, "format": "0.00"},
        "adaptive": {"type": pn.widgets.Checkbox},
        "log10_tol": {"type": pn.widgets.FloatSlider, "step": 0.1, "format": "0.0"},
        "sigma": {"type": pn.widgets.FloatSlider, "step": 0.1, "format": "0.0"},
        "seed": {"type": pn.widgets.IntSlider},
    }

    equation = param.Selector(default="GBM", objects=list(EQUATIONS), label="SDE",
                              doc="GBM (exact solution), OU (additive noise), CIR (square-root diffusion).")
    solver = param.Selector(default="Heun", objects=list(SOLVERS), label="solver",
                            doc="The method of the solved path (the sweep shows every applicable one).")
    log2_dt = param.Number(-5.0, bounds=(-10.0, -2.0), step=0.25, label="log2 dt",
                           doc="Constant step 2**log2_dt (rounded to T/n); the first step when adaptive.")
    adaptive = param.Boolean(False, label="adaptive steps",
                             doc="Let a controller choose the steps: PI on the embedded error estimate (Heun, "
                                 "ShARK) or the paper's state rule (drift-implicit Euler, HOStS).")
    log10_tol = param.Number(-2.0, bounds=(-3.5, -0.5), step=0.1, label="log10 tol",
                             doc="Adaptive tolerance 10**log10_tol: rtol = atol (PI) or c (state rule).")
    sigma = param.Number(0.5, bounds=(0.1, 2.5), step=0.1, label="volatility σ",
                         doc="The noise amplitude of the SDE (CIR: Feller condition holds for σ² <= 2).")
    seed = param.Integer(0, bounds=(0, 999), label="seed",
                         doc="The path shown is the tree of jax.random.key(seed); the sweep's trees are fixed.")

    def warm_up(self) -> None:
        warm_up_kernels()

    def compute(self) -> dict:
        name, solver_name, adaptive = self.equation, self.solver, bool(self.adaptive)
        check_choice(name, solver_name, adaptive)
        eq = EQUATIONS[name]
        # Fixed dtypes: the browser sends integral-looking values as Python ints.
        seed, sigma = int(self.seed), float(np.float32(self.sigma))
        out = jax.device_get(path_kernel(np.int32(seed), np.float32(self.log2_dt), np.float32(self.log10_tol),
                                         np.float32(sigma), np.int32(list(EQUATIONS).index(name)),
                                         np.int32(list(SOLVERS).index(solver_name)), np.bool_(adaptive)))
        try:  # the core's message says what happened; add what to do here
            sde.Solution(out["ts"], out["ys"], out["y1"], out["n_steps"], {}, out["result"]).raise_for_result()
        except SolverError as exc:
            here = {1: f"this dashboard keeps at most {MAX_STEPS} steps: raise log10 tol",
                    2: "raise log10 tol or lower σ"}.get(int(out["result"]), "choose a smaller step")
            raise SolverError(f"{exc}. Here: {here}.") from None
        swept = sweep(name, sigma)
        ref = reference(name, seed, sigma, solver_name)

        n = int(out["n_steps"])
        h_mean = T / n
        path_error = abs(float(out["y1"]) - float(ref["y1"]))
        return {
            "solution": {"t": out["ts"][: n + 1], "y": out["ys"][: n + 1]},
            "reference": {"t": _T_DISPLAY, "y": ref["y"]},
            **self._error_plot(eq, swept, solver_name, h_mean, path_error),
            "summary": self._summary(eq, solver_name, adaptive, out, h_mean, path_error),
        }

    def _error_plot(self, eq: Equation, swept: dict, current: str, h_mean: float, path_error: float) -> dict:
        curves = {"xs": [], "ys": [], "color": [], "label": [], "width": []}
        slopes = {"xs": [], "ys": [], "color": []}
        points = {"dt": [], "error": [], "color": []}
        for name in eq.solvers:
            errors, (order, (lo, hi), used) = swept["errors"][name], swept["orders"][name]
            color = _COLORS[name]
            nominal, note = eq.theory(name)
            curves["xs"].append(SWEEP_DTS)
            curves["ys"].append(errors)
            curves["color"].append(color)
            curves["width"].append(3.0 if name == current else 1.5)
            fitted = "n/a (round-off)" if np.isnan(order) else f"{order:.2f} [{lo:.2f}, {hi:.2f}]"
            if used < len(SWEEP_DTS) and not np.isnan(order):
                fitted += f" on {used} largest h"
            curves["label"].append(f"{name}: fitted {fitted}, theory {nominal:g}{note}")
            if np.any(errors > 0):
                slopes["xs"].append(SWEEP_DTS)
                slopes["ys"].append(_order_line(SWEEP_DTS, errors, nominal, swept["floor"]))
                slopes["color"].append(color)
            points["dt"].extend(SWEEP_DTS)
            points["error"].extend(errors)
            points["color"].extend([color] * len(SWEEP_DTS))
        return {
            "curves": curves,
            "slopes": slopes,
            "points": points,
            "step": {"dt": [h_mean], "error": [max(path_error, 1e-9)], "color": [_COLORS[current]]},
        }

    def _summary(self, eq: Equation, solver: str, adaptive: bool, out: dict, h_mean: float, path_error: float) -> str:
        n, rejected, code = int(out["accepted"]), int(out["rejected"]), int(out["result"])
        fine = f"h = 2^-{int(np.log2(REF_STEPS))}"
        ref = {"exact": "the exact solution", "ShARK": f"ShARK at {fine}", "same": f"{solver} at {fine}"}[eq.reference]
        form = "additive noise" if eq.ito.noise == "additive" else f"{eq.form(SOLVERS[solver]).calculus} form"
        if adaptive:
            tol = 10.0**self.log10_tol
            how = (f"state rule h = (X c)^(2/3), c = {tol:.1e}" if solver in STATE_RULE_SOLVERS
                   else f"PI controller, rtol = atol = {tol:.1e}")
            steps = f"adaptive ({how}): **{n} steps accepted, {rejected} rejected**, mean step {h_mean:.3g}"
        else:
            steps = (f"constant steps: **{n} steps** of h = {h_mean:.4g} "
                     f"(asked 2^{self.log2_dt:g} = {2.0**self.log2_dt:.4g})")
        text = (
            f"**{eq.formula}**, σ = {float(np.float32(self.sigma)):.1f}; solved with **{solver}** ({form}).  \n"
            f"{steps}; drift evaluations {int(out['nfe'])}; result {code} ({sde.RESULTS[code]}).  \n"
            f"This path at T: |Y_T - reference| = {path_error:.2e}; reference: {ref}."
        )
        low = float(np.nanmin(out["ys"]))
        if eq.name == "CIR" and low < -1e-3:  # HOStS may end a step a hair below 0 (see its docstring)
            text += (f"  \n**The solution went below zero** (min {low:.3f}); the CIR process never does. "
                     + ("Below 0 the noise vanishes and the Stratonovich drift pulls it to b̃ = "
                        f"{float(sde.cir.b_tilde(eq.args(float(self.sigma)))):.2f}: trapped."
                        if eq.form(SOLVERS[solver]).calculus == "stratonovich" and solver not in STATE_RULE_SOLVERS
                        else ""))
        return text

    def views(self) -> list:
        src = {name: self.source(name) for name in ("solution", "reference", "curves", "slopes", "points", "step")}
        return [_path_figure(src), self.text("summary", width=760), _error_figure(src)]


def _path_figure(src: dict) -> pn.pane.Bokeh:
    fig = _figure("the solved path over the exact / reference path of the same tree",
                  x_axis_label="t", y_axis_label="Y", x_range=(0.0, T))
    fig.add_layout(Span(location=0.0, dimension="width", line_color="#999999", line_dash="dotted"))
    fig.line("t", "y", source=src["reference"], color="#555555", line_width=1.5, legend_label="exact / reference")
    fig.line("t", "y", source=src["solution"], color="#e6550d", line_width=1.5, legend_label="solver")
    fig.scatter("t", "y", source=src["solution"], color="#e6550d", size=4)
    _legend_right(fig)
    fig.legend[0].location = "top_left"
    return pn.pane.Bokeh(fig)


def _error_figure(src: dict) -> pn.pane.Bokeh:
    floor = roundoff_floor(np.dtype(jnp.result_type(float)))
    fig = _figure(f"strong error at T, mean of {N_PATHS} paths: dashed theory's order, ◆ this path and step",
                  x_axis_type="log", y_axis_type="log", x_axis_label="step h", y_axis_label="strong error at T",
                  x_range=(2.0**-10.5, 2.0**-1.5), height=360)
    fig.add_layout(BoxAnnotation(top=floor, fill_color="#bdbdbd", fill_alpha=0.35, level="underlay"))
    fig.vspan(x="dt", source=src["step"], line_color="#fdae6b", line_width=3, line_alpha=0.8)
    fig.multi_line("xs", "ys", source=src["slopes"], color="color", line_dash="dashed", line_width=1.2, alpha=0.8)
    fig.multi_line("xs", "ys", source=src["curves"], color="color", line_width="width", legend_field="label")
    fig.scatter("dt", "error", source=src["points"], color="color", size=5)
    fig.scatter("dt", "error", source=src["step"], color="color", marker="diamond", size=12, line_color="black")
    _legend_right(fig)
    fig.legend[0].location = "top_left"  # errors fall to the lower left: the upper left stays clear
    return pn.pane.Bokeh(fig)
