r"""Strong convergence on one Brownian path per sample: errors against step size, and the fitted order.

Every step size solves on the *same* :class:`~solverlab.brownian.BrownianTree` (one per sample path),
so the error at :math:`t_1`,

.. math::
    e(h) = \mathbb E\,\big|Y^h_{t_1} - Y_{t_1}\big| \approx C h^{p},

compares solutions driven by identical noise. The order :math:`p` is the slope of
:math:`\log e` against :math:`\log h` (least squares); its confidence interval comes from a
bootstrap over the sample paths.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from ..brownian import BrownianTree
from ..errors import check_range
from ._solve import solve

__all__ = ["Convergence", "strong_convergence", "weak_convergence", "fit_order"]


@dataclasses.dataclass(frozen=True)
class Convergence:
    """``dts``; ``errors`` (mean absolute error at ``t1`` per step size); ``order`` and its ``ci``."""

    dts: np.ndarray
    errors: np.ndarray
    order: float
    ci: tuple[float, float]
    path_errors: np.ndarray  # (n_paths, n_dts)

    def __str__(self):
        return f"order {self.order:.2f} (95% CI {self.ci[0]:.2f} to {self.ci[1]:.2f})"


def _check_sweep(dts, t0, t1, n_paths) -> np.ndarray:
    """The step sizes as an array, after checking them and the number of paths."""
    dts = np.asarray(dts, float)
    check_range("dts", dts, low=0.0, low_open=True, high=float(t1 - t0))
    if n_paths < 2:
        raise ValueError(f"n_paths must be at least 2, got {n_paths}")
    return dts


def fit_order(dts, path_errors, *, n_boot: int = 1000, seed: int = 0):
    """Least-squares slope of log mean error against log step, with a bootstrap 95% interval."""
    dts = np.asarray(dts, float)
    e = np.asarray(path_errors, float)
    x = np.log(dts)

    def slope(rows):
        y = np.log(e[rows].mean(axis=0))
        return np.polyfit(x, y, 1)[0]

    rng = np.random.default_rng(seed)
    all_rows = np.arange(e.shape[0])
    boot = [slope(rng.integers(0, e.shape[0], e.shape[0])) for _ in range(n_boot)]
    return float(slope(all_rows)), (float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975)))


def strong_convergence(
    sde,
    solver,
    y0,
    t0: float,
    t1: float,
    dts,
    key,
    n_paths: int = 500,
    *,
    exact: Callable | None = None,
    reference_solver=None,
    reference_dt: float | None = None,
    args=None,
) -> Convergence:
    r"""Strong errors of ``solver`` at ``t1`` for each step in ``dts``, and the fitted order.

    The truth is ``exact(t1, y0, W)`` when given (``W`` the tree's increment over :math:`[t_0, t_1]`,
    for SDEs solved in closed form by the path's endpoint, e.g. geometric Brownian motion), else the
    ``reference_solver`` (default: ``solver``) at ``reference_dt`` (default: ``min(dts) / 16``) on
    the same tree.
    """
    dts = _check_sweep(dts, t0, t1, n_paths)
    reference_solver = reference_solver or solver
    reference_dt = float(reference_dt or dts.min() / 16)
    y0 = jnp.asarray(y0, jnp.result_type(float))
    w_shape = sde.brownian_shape(y0, args)
    levy = solver.levy_area or reference_solver.levy_area
    tol = min(reference_dt, dts.min()) / 8

    def one_path(k):
        tree = BrownianTree(t0, t1, tol, w_shape, k, levy_area=levy)
        if exact is not None:
            truth = exact(t1, y0, tree.evaluate(t0, t1).W)
        else:
            truth = solve(sde, reference_solver, y0, t0, t1, dt=reference_dt, brownian=tree,
                          args=args, check=False).y1
        errs = [
            jnp.mean(jnp.abs(solve(sde, solver, y0, t0, t1, dt=float(h), brownian=tree, args=args,
                                   check=False).y1 - truth))
            for h in dts
        ]
        return jnp.stack(errs)

    keys = jax.random.split(key, n_paths)
    path_errors = np.asarray(jax.jit(jax.vmap(one_path))(keys))
    if not np.all(np.isfinite(path_errors)):
        raise ValueError("some solves diverged (NaN errors): use smaller steps")
    order, ci = fit_order(dts, path_errors)
    return Convergence(dts, path_errors.mean(axis=0), order, ci, path_errors)


def weak_convergence(
    sde,
    solver,
    y0,
    t0: float,
    t1: float,
    dts,
    key,
    n_paths: int,
    *,
    phi: Callable,
    expected: float,
    args=None,
) -> Convergence:
    r"""Weak errors :math:`|\mathbb E\,\varphi(Y^h_{t_1}) - \mathbb E\,\varphi(Y_{t_1})|` and the fitted order.

    The expectation is a Monte Carlo mean over ``n_paths`` paths, the same paths for every step size
    (common random numbers, so the differences between step sizes are not swamped by sampling noise);
    ``expected`` is the exact value. The confidence interval of the order comes from a bootstrap
    over paths. Monte Carlo error must stay well below the bias for the order to mean anything:
    ``Convergence.path_errors`` holds :math:`\varphi(Y^h) - \text{expected}` per path, whose standard
    error tells.
    """
    dts = _check_sweep(dts, t0, t1, n_paths)
    y0 = jnp.asarray(y0, jnp.result_type(float))
    w_shape = sde.brownian_shape(y0, args)
    tol = dts.min() / 8

    def one_path(k):
        tree = BrownianTree(t0, t1, tol, w_shape, k, levy_area=solver.levy_area)
        return jnp.stack([
            phi(solve(sde, solver, y0, t0, t1, dt=float(h), brownian=tree, args=args, check=False).y1)
            - expected
            for h in dts
        ])

    path_errors = np.asarray(jax.jit(jax.vmap(one_path))(jax.random.split(key, n_paths)))
    if not np.all(np.isfinite(path_errors)):
        raise ValueError("some solves diverged (NaN errors): use smaller steps")
    errors = np.abs(path_errors.mean(axis=0))
    x = np.log(dts)
    rng = np.random.default_rng(0)
    boot = []
    for _ in range(1000):
        rows = rng.integers(0, n_paths, n_paths)
        boot.append(np.polyfit(x, np.log(np.abs(path_errors[rows].mean(axis=0))), 1)[0])
    order = float(np.polyfit(x, np.log(errors), 1)[0])
    ci = (float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975)))
    return Convergence(dts, errors, order, ci, path_errors)
