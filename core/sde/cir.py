r"""The CIR experiment of Jelincic, Foster & Kidger (2024): adaptive steps from the state.

Jelincic, Foster & Kidger, "Single-seed generation of Brownian paths and integrals for adaptive and
high order SDE solvers" (2024), section on the Cox-Ingersoll-Ross process; their code is the notebook
``notebooks/cir_model.ipynb`` of ``andyElking/Single-seed_BrownianMotion``. The process,

.. math::
    dX_t = a(b - X_t)\,dt + \sigma\sqrt{X_t}\,dW_t
         = a(\tilde b - X_t)\,dt + \sigma\sqrt{X_t}\circ dW_t, \qquad \tilde b = b - \frac{\sigma^2}{4a},

with ``args = (a, b, sigma)``, all positive (see :mod:`solverlab.sde._solver.cir`). The paper's
high-volatility case is :math:`a = b = 1,\ \sigma = 2.2,\ X_0 = 1,\ T = 4`.

**The state rule.** The square-root diffusion is steepest near zero, so the step is set by the state:

.. math::
    h = \mathrm{clip}\big((\max(X, 0)\,c)^{2/3},\ 2^{-15},\ 1\big),

a smaller tolerance :math:`c` (``ctol``) giving smaller steps. No error estimate is needed.
:func:`state_controller` gives a :class:`~solverlab.sde.StateRuleController` (every step accepted,
the next step from the new state); with ``reject=True`` it gives :class:`PaperStateController`, the
rule exactly as in the paper's code, which also rejects a step longer than 1.1 times the rule's step
at :math:`\min(X_n, X_{n+1})` and retries it, shorter, on the same Brownian tree.

**The measurement** (:func:`cir_convergence`). On ``n_paths`` Brownian trees (one key each, with
space-time Levy area), every tolerance (or constant step) and a reference -- the same method at the
smallest tolerance (or step) divided by ``ref_factor = 4``, as in the paper (two levels finer) --
solve the same path. The strong error is the root mean square over paths of :math:`|X_T - X^{ref}_T|`
(the paper's :math:`L^2` error at :math:`T`), the cost is the mean number of accepted steps
:math:`\bar N`, and the order :math:`p` is the least-squares slope in
:math:`\log \mathrm{err} = \log C - p \log \bar N`, with a 95% bootstrap interval over paths.

**Why a generic solver fails here.** For :math:`X < 0` the Stratonovich SDE (with
:math:`\sqrt{\max(X, 0)}`) has no noise, and its drift :math:`a(\tilde b - X)` pulls :math:`X` to
:math:`\tilde b`. When :math:`\tilde b < 0` (here :math:`-0.21`) that is a stable rest point below zero:
a path that a generic solver (e.g. stochastic Heun) steps below zero relaxes to :math:`\tilde b` and
never returns, although the true process is non-negative and is reflected at zero. The CIR solvers
never take the square root of a negative number: they step the exact flows, and for the noise part
:math:`(\sqrt{x} + \sigma w/2)^2 \ge 0`. :attr:`CIRConvergence.below_zero` counts the trapped paths.

Run in float64 (``solverlab.setup(x64=True)``): the errors at the finest tolerances are small.
"""

from __future__ import annotations

import dataclasses
import functools
import time
import warnings
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ..brownian import BrownianTree
from ..errors import check_range
from ._solve import AbstractController, PIController, StateRuleController, solve
from ._solver import AbstractSolver, DriftImplicitEulerCIR, Heun, HOStS
from ._solver.cir import CIR_ITO, CIR_STRATONOVICH, b_tilde

__all__ = [
    "cir_sde",
    "check_cir_args",
    "b_tilde",
    "StepRule",
    "state_controller",
    "PaperStateController",
    "CIRConvergence",
    "cir_convergence",
    "fit_steps_order",
    "cir_experiment",
    "format_table",
    "PAPER_ARGS",
    "PAPER_ORDERS",
]

#: The paper's high-volatility case: ``args = (a, b, sigma)``, with ``X0 = 1`` and ``T = 4``.
PAPER_ARGS = (1.0, 1.0, 2.2)
#: Orders the paper's notebook reports for the high-volatility case (constant, adaptive).
PAPER_ORDERS = {
    "HOStS": (0.3944, 0.8092),
    "drift-implicit Euler": (0.4642, 0.8618),
    "generic PI SRK": (0.455, 0.49),
}


def cir_sde(calculus: str = "stratonovich"):
    r"""The CIR SDE with ``args = (a, b, sigma)``: the Stratonovich form (default) or the Ito form.

    Stratonovich: :math:`dX = a(\tilde b - X)\,dt + \sigma\sqrt{\max(X, 0)}\circ dW`; Ito:
    :math:`dX = a(b - X)\,dt + \sigma\sqrt{\max(X, 0)}\,dW`. ``a``, ``b``, ``sigma`` are traced (a
    new value does not recompile); ``X`` may have any shape (independent copies, diagonal noise).
    Both forms are accepted by :class:`~solverlab.sde.HOStS` and
    :class:`~solverlab.sde.DriftImplicitEulerCIR`; generic solvers pick the form of their calculus.
    """
    if calculus == "stratonovich":
        return CIR_STRATONOVICH
    if calculus == "ito":
        return CIR_ITO
    raise ValueError(f"calculus must be one of ito, stratonovich, got {calculus!r}")


def check_cir_args(args) -> tuple[float, float, float]:
    """``ValueError`` unless ``args = (a, b, sigma)`` has three positive, finite entries."""
    try:
        a, b, sigma = args
    except (TypeError, ValueError):
        raise ValueError(f"args must be (a, b, sigma), got {args!r}") from None
    for name, value in (("a", a), ("b", b), ("sigma", sigma)):
        check_range(name, value, low=0.0, low_open=True)
    return a, b, sigma


@dataclasses.dataclass(frozen=True)
class StepRule:
    r"""The paper's step rule :math:`(t, X) \mapsto (\max(X, 0)\,c)^{2/3}` (clipped by the controller).

    A hashable value (equal tolerances give equal rules), so a solve is compiled once per tolerance.
    """

    ctol: float

    def __post_init__(self):
        check_range("ctol", self.ctol, low=0.0, low_open=True)

    def __call__(self, t, y):
        return (jnp.maximum(y, 0.0) * self.ctol) ** (2.0 / 3.0)


@dataclasses.dataclass(frozen=True)
class PaperStateController(StateRuleController):
    r"""The paper's CIR controller: the state rule, and a rejection when the state fell too far.

    With :math:`r(x) = \mathrm{clip}((\max(x, 0)\,c)^{2/3}, h_{\min}, h_{\max})`, a step :math:`h`
    from :math:`X_n` to :math:`X_{n+1}` is accepted when :math:`h < 1.1\,r(\min(X_n, X_{n+1}))`; the
    next step is :math:`r(X_{n+1})` after an accepted step, :math:`r(\min(X_n, X_{n+1}))` after a
    rejected one (retried on the same tree). Jelincic, Foster & Kidger (2024), ``CIRController``.

    Measured here for :math:`\sigma = 2.2`: near zero almost every accepted step follows a rejection
    and is a ``dt_min`` step, so the coarsest tolerances are not the cheapest (mean steps 677, 440,
    485, ... for HOStS at :math:`c = 2^{-1}, 2^{-2}, 2^{-3}`), which distorts an order fitted against
    mean steps.
    """

    slack: float = 1.1

    def __post_init__(self):
        super().__post_init__()
        check_range("slack", self.slack, low=1.0, low_open=True)

    def decide(self, t, y, y_next, y_err, h, state):
        desired = self._step(t, jnp.minimum(y, y_next))
        accept = h < self.slack * desired
        h_next = jnp.where(accept, self._step(t + h, y_next), desired)
        return accept, h_next, state


def state_controller(ctol: float, *, dt_min: float = 2.0**-15, dt_max: float = 1.0,
                     reject: bool = False) -> AbstractController:
    r"""The state rule :math:`h = \mathrm{clip}((\max(X,0)\,c)^{2/3}, h_{\min}, h_{\max})` as a controller.

    ``reject=False``: a :class:`~solverlab.sde.StateRuleController` (every step accepted).
    ``reject=True``: :class:`PaperStateController`, the paper's controller with its rejection test.
    ``ctol > 0``; ``0 < dt_min <= dt_max``.
    """
    rule = StepRule(float(ctol))
    if reject:
        return PaperStateController(rule, dt_min=dt_min, dt_max=dt_max)
    return StateRuleController(rule, dt_min=dt_min, dt_max=dt_max)


@dataclasses.dataclass(frozen=True)
class CIRConvergence:
    """What :func:`cir_convergence` measured, level by level (a level is a ctol, dt or atol).

    Attributes:
        solver, mode: the solver's name; ``"adaptive"`` (state rule), ``"constant"`` or ``"pi"``.
        levels: the tolerances or steps, coarse to fine; ``reference``: the reference's.
        mean_steps: mean accepted steps per level; ``mean_rejected``: mean rejected steps.
        errors: RMS over paths of :math:`|X_T - X^{ref}_T|` per level.
        order, ci: fitted order of error against mean steps, and its 95% bootstrap interval.
        path_errors, path_steps: ``(n_paths, n_levels)`` absolute errors and accepted steps.
        below_zero: per level, the fraction of paths that went below zero at some accepted step;
            ``ends_below_zero``: the fraction with :math:`X_T < 0` (trapped, for generic solvers).
        failed: paths left out because a solve did not succeed (result code not 0), out of ``n_paths``;
            ``failures``: ``{result code: number of failed solves}`` over all levels and the reference
            (codes as in :data:`solverlab.sde.RESULTS`, e.g. 2 for a PI step below ``dt_min``).
        seconds: wall time of the whole measurement (compilation included).
        args, x0, t1: the problem.
    """

    solver: str
    mode: str
    levels: np.ndarray
    reference: float
    mean_steps: np.ndarray
    mean_rejected: np.ndarray
    errors: np.ndarray
    order: float
    ci: tuple[float, float]
    path_errors: np.ndarray
    path_steps: np.ndarray
    below_zero: np.ndarray
    ends_below_zero: np.ndarray
    failed: int
    failures: dict
    n_paths: int
    seconds: float
    args: tuple
    x0: float
    t1: float

    def __str__(self):
        return (f"{self.solver} ({self.mode}): order {self.order:.2f} "
                f"(95% CI {self.ci[0]:.2f} to {self.ci[1]:.2f}), {self.n_paths - self.failed} paths")


def fit_steps_order(path_steps, path_errors, *, n_boot: int = 1000, seed: int = 0):
    r"""Order :math:`p` in :math:`\mathrm{RMS\ error} \approx C\,\bar N^{-p}`, and a 95% bootstrap interval.

    ``path_steps``, ``path_errors``: ``(n_paths, n_levels)``. The slope is least squares of
    :math:`\log \sqrt{\overline{e^2}}` on :math:`\log \bar N`; the bootstrap resamples paths and
    recomputes both :math:`\bar N` and the error, since with adaptive steps the cost is random too
    (which is why :func:`solverlab.sde.fit_order`, with fixed step sizes, is not used here).
    """
    n = np.asarray(path_steps, float)
    e2 = np.asarray(path_errors, float) ** 2

    def order(rows):
        x = np.log(n[rows].mean(axis=0))
        y = 0.5 * np.log(e2[rows].mean(axis=0))
        return -np.polyfit(x, y, 1)[0]

    rng = np.random.default_rng(seed)
    boot = [order(rng.integers(0, n.shape[0], n.shape[0])) for _ in range(n_boot)]
    return float(order(np.arange(n.shape[0]))), (
        float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975)))


@dataclasses.dataclass(frozen=True, eq=False)
class _TracedPI(PIController):
    """A PI controller whose tolerances may be traced: hashed by identity, so it can be built inside
    a jitted function and passed on as a static argument (one compilation for every tolerance)."""

    __eq__ = object.__eq__
    __hash__ = object.__hash__


@functools.partial(jax.jit, static_argnames=(
    "sde", "solver", "mode", "dt", "t1", "max_steps", "tree_tol", "dt_min", "dt_max", "reject"))
def _solve_paths(keys, x0, args, level, *, sde, solver, mode, dt, t1, max_steps, tree_tol, dt_min,
                 dt_max, reject):
    """One solve per key on its own tree: X_T, accepted and rejected steps, path minimum, result.

    ``level`` (ctol or atol) is traced: the controller is built here around it, so a sweep over
    tolerances compiles once. Constant steps (``mode="constant"``) use the static ``dt``.
    """
    if mode == "adaptive":
        rule = lambda t, y: (jnp.maximum(y, 0.0) * level) ** (2.0 / 3.0)
        cls = PaperStateController if reject else StateRuleController
        controller = cls(rule, dt_min=dt_min, dt_max=dt_max)
    elif mode == "pi":
        controller = _TracedPI(rtol=0.0 * level, atol=level, dt_min=dt_min)
    else:
        controller = None

    def one(key):
        tree = BrownianTree(0.0, t1, tree_tol, (), key, levy_area="space-time")
        sol = solve(sde, solver, x0, 0.0, t1, dt=dt, brownian=tree, args=args,
                    controller=controller, max_steps=max_steps, check=False)
        return (sol.y1, sol.stats["accepted"], sol.stats["rejected"], jnp.nanmin(sol.ys),
                sol.result)

    return jax.vmap(one)(keys)


def _levels(name, values, high=None):
    arr = np.asarray(values, float).ravel()
    if arr.size < 2:
        raise ValueError(f"{name} must hold at least 2 values, got {values!r}")
    check_range(name, arr, low=0.0, low_open=True, high=high)
    return np.sort(arr)[::-1]  # coarse to fine


def cir_convergence(
    solver: AbstractSolver,
    *,
    key,
    ctols: Sequence[float] | None = None,
    dts: Sequence[float] | None = None,
    atols: Sequence[float] | None = None,
    n_paths: int = 200,
    args=PAPER_ARGS,
    x0: float = 1.0,
    t1: float = 4.0,
    dt_min: float = 2.0**-15,
    dt_max: float = 1.0,
    reject: bool = False,
    ref_factor: float = 4.0,
    max_steps: int = 2**13,
    batch: int = 250,
) -> CIRConvergence:
    r"""Strong error at :math:`T` against the same method, finer, and the order against mean steps.

    Give exactly one of

    * ``ctols``: adaptive steps by the state rule (:func:`state_controller`, ``reject`` as there,
      ``dt_min``, ``dt_max``); the reference uses ``min(ctols) / ref_factor``;
    * ``dts``: constant steps (``t1 / dt`` rounded to whole steps); reference ``min(dts) / ref_factor``;
    * ``atols``: a :class:`~solverlab.sde.PIController` (``rtol = 0``, ``atol``, ``dt_min``) on the
      solver's embedded error estimate (e.g. :class:`~solverlab.sde.Heun`); reference
      ``min(atols) / ref_factor``.

    Every level and the reference solve the same ``n_paths`` Brownian trees (``key`` split; space-time
    Levy area; ``tol`` half the smallest step used). The solver sees the Stratonovich CIR SDE if it
    converges to Stratonovich solutions, else the Ito one. Adaptive solves that hit ``max_steps``
    are rerun with twice as many (it is a static buffer size); paths whose solve fails otherwise
    (e.g. PI step-size underflow) are left out of every level and counted in ``failed``.

    Args:
        solver: any solver for the CIR SDE (shape ``()`` state).
        key: a ``jax.random`` key.
        n_paths: at least 2; ``batch`` paths are vmapped at a time (memory: ``max_steps`` per path).
        args: ``(a, b, sigma)``, all > 0. ``x0 >= 0``; ``t1 > 0``.

    Returns:
        :class:`CIRConvergence`.
    """
    start = time.perf_counter()
    if not isinstance(solver, AbstractSolver):
        raise ValueError(f"solver must be a solverlab.sde solver instance, got {solver!r}")
    given = [name for name, v in (("ctols", ctols), ("dts", dts), ("atols", atols)) if v is not None]
    if len(given) != 1:
        raise ValueError(f"give exactly one of ctols, dts, atols; got {', '.join(given) or 'none'}")
    args = tuple(float(v) for v in check_cir_args(args))
    check_range("x0", x0, low=0.0)
    check_range("t1", t1, low=0.0, low_open=True)
    check_range("ref_factor", ref_factor, low=1.0, low_open=True)
    if isinstance(n_paths, bool) or not isinstance(n_paths, int) or n_paths < 2:
        raise ValueError(f"n_paths must be an int >= 2, got {n_paths!r}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive int, got {batch!r}")
    x0, t1 = float(x0), float(t1)
    sde = CIR_STRATONOVICH if "stratonovich" in solver.calculi else CIR_ITO
    solver.check(sde)

    if ctols is not None:
        mode, levels = "adaptive", _levels("ctol", ctols)
    elif dts is not None:
        mode, levels = "constant", _levels("dt", dts, high=t1)
    else:
        mode, levels = "pi", _levels("atol", atols)
        if not solver.error_estimate:
            raise ValueError(f"{solver.name} has no embedded error estimate: use ctols or dts")
    reference = float(levels[-1] / ref_factor)
    if mode == "constant":
        tree_tol, dt0 = reference / 2, None
    else:
        check_range("dt_min", dt_min, low=0.0, low_open=True, high=t1)
        check_range("dt_max", dt_max, low=dt_min)
        tree_tol, dt0 = dt_min / 2, (dt_max if mode == "adaptive" else min(0.1, t1))

    keys = jax.random.split(key, n_paths)
    dtype = jnp.result_type(float)
    if dtype != jnp.float64:
        warnings.warn("cir_convergence runs in float32: errors below about 1e-6 are rounding; call "
                      "solverlab.setup(x64=True) first for convergence orders", stacklevel=2)
    x0a = jnp.asarray(x0, dtype)
    steps = max_steps

    def run(level):
        nonlocal steps
        while True:
            outs = [_solve_paths(keys[i:i + batch], x0a, args, jnp.asarray(level, dtype), sde=sde,
                                 solver=solver, mode=mode, dt=float(dt0 or level), t1=t1,
                                 max_steps=steps, tree_tol=float(tree_tol), dt_min=float(dt_min),
                                 dt_max=float(dt_max), reject=bool(reject))
                    for i in range(0, n_paths, batch)]
            y1, acc, rej, low, res = (np.concatenate([np.asarray(o[j]) for o in outs])
                                      for j in range(5))
            if mode == "constant" or not np.any(res == 1) or steps >= 2**22:
                return y1, acc, rej, low, res
            steps *= 2  # max_steps is a static buffer size: rerun (and recompile) with more

    rows = [run(level) for level in levels]
    ref = run(reference)

    ok = ref[4] == 0
    for r in rows:
        ok &= r[4] == 0
    if ok.sum() < 2:
        raise ValueError(f"fewer than 2 of {n_paths} paths solved at every level; codes "
                         f"{np.unique(np.concatenate([r[4] for r in rows]))}")
    codes = np.unique(np.concatenate([r[4] for r in rows] + [ref[4]]), return_counts=True)
    path_errors = np.stack([np.abs(r[0] - ref[0]) for r in rows], axis=1)[ok]
    path_steps = np.stack([r[1] for r in rows], axis=1)[ok].astype(float)
    order, ci = fit_steps_order(path_steps, path_errors)
    return CIRConvergence(
        solver=solver.name, mode=mode, levels=levels,
        reference=reference,
        mean_steps=path_steps.mean(axis=0),
        mean_rejected=np.asarray([r[2][ok].mean() for r in rows]),
        errors=np.sqrt(np.mean(path_errors**2, axis=0)),
        order=order, ci=ci, path_errors=path_errors, path_steps=path_steps,
        below_zero=np.asarray([np.mean(r[3][ok] < 0) for r in rows]),
        ends_below_zero=np.asarray([np.mean(r[0][ok] < 0) for r in rows]),
        failed=int(n_paths - ok.sum()), failures={int(c): int(k) for c, k in zip(*codes) if c != 0},
        n_paths=n_paths,
        seconds=time.perf_counter() - start, args=args, x0=x0, t1=t1,
    )


def cir_experiment(
    key,
    *,
    n_paths: int = 200,
    ctols: Sequence[float] = tuple(2.0**-k for k in range(1, 10)),
    dts: Sequence[float] = tuple(2.0**-k for k in range(1, 10)),
    atols: Sequence[float] = tuple(2.0**-k for k in range(1, 8)),
    args=PAPER_ARGS,
    x0: float = 1.0,
    t1: float = 4.0,
    reject: bool = False,
    generic: AbstractSolver | None = None,
) -> list[CIRConvergence]:
    r"""The paper's comparison: HOStS and drift-implicit Euler with constant and state-rule steps, and a
    generic solver (default stochastic Heun) with constant and PI-controlled steps, on the same paths.

    Defaults are the paper's high-volatility case (:data:`PAPER_ARGS`, :math:`X_0 = 1`, :math:`T = 4`)
    and its tolerance levels :math:`c = 2^{-1}, \dots, 2^{-9}` (constant steps
    :math:`2^{-1}, \dots, 2^{-9}`; PI tolerances :math:`2^{-1}, \dots, 2^{-7}` with
    ``dt_min = 2^-20``), with fewer paths than the paper's 50,000. About 16 minutes for 200 paths on
    2 CPU cores (float64), most of it the two state-rule runs. Returns one
    :class:`CIRConvergence` per run; :func:`format_table` prints them.
    """
    generic = generic if generic is not None else Heun()
    common = dict(key=key, n_paths=n_paths, args=args, x0=x0, t1=t1)
    out = []
    for solver in (HOStS(), DriftImplicitEulerCIR()):
        out.append(cir_convergence(solver, dts=dts, **common))
        out.append(cir_convergence(solver, ctols=ctols, reject=reject, **common))
    out.append(cir_convergence(generic, dts=dts, **common))
    # With dt_min = 2^-15 a PI controller asks for steps below it near zero (a failed solve, left
    # out); at 2^-20 every path finishes.
    out.append(cir_convergence(generic, atols=atols, dt_min=2.0**-20, **common))
    return out


def format_table(results: Sequence[CIRConvergence]) -> str:
    """A plain-text table: solver, mode, order and interval, mean steps, paths below zero, time."""
    lines = [f"{'solver':28s} {'mode':9s} {'order':>6s} {'95% CI':>14s} {'steps':>15s} "
             f"{'<0 (end)':>9s} {'paths':>6s} {'time':>7s}"]
    for r in results:
        lines.append(
            f"{r.solver:28s} {r.mode:9s} {r.order:6.2f} {f'[{r.ci[0]:.2f}, {r.ci[1]:.2f}]':>14s} "
            f"{f'{r.mean_steps[0]:.0f}-{r.mean_steps[-1]:.0f}':>15s} "
            f"{r.ends_below_zero.max():9.1%} {r.n_paths - r.failed:6d} {r.seconds:6.0f}s")
    return "\n".join(lines)
