r"""Multi-difficulty data for neural PDE solvers: flow past random obstacles, with its solver cost.

Choudhary, Singh, Talwalkar, Boffi, Khodak & Marwah (2025), "Pre-Generating Multi-Difficulty PDE
Data for Few-Shot Neural PDE Solvers", vary 2-D incompressible Navier-Stokes problems along two
axes of difficulty, the Reynolds number and the geometry (number and placement of obstacles), and
show that spending classical-solver compute on many easy samples plus a few hard ones beats
spending it all on hard ones. This generator makes such data with
:mod:`solverlab.fluids.obstacles` and records what each sample cost.

A sample: Reynolds number :math:`Re` log-uniform in ``reynolds_range``, obstacle count :math:`m`
uniform in ``n_obstacles``, cylinders placed uniformly at random in a placement window (upstream
half of the box, clear of the sponge and of each other by ``min_gap``), all from one
``jax.random`` key. Its difficulty score is the mean of the two normalised axes,

.. math::
    d = \tfrac12\,\frac{\log(Re/Re_{\min})}{\log(Re_{\max}/Re_{\min})}
        + \tfrac12\,\frac{m - m_{\min}}{m_{\max} - m_{\min}} \in [0, 1],

and samples come back sorted by it. Why harder costs more, as in the paper: with
``resolution="auto"`` the grid is refined as :math:`h \propto Re^{-1/2}`, the scaling of the
boundary-layer thickness (Schlichting, *Boundary-Layer Theory*), from a base grid that resolves
``resolved_reynolds``; and the time step follows the CFL number the flow reaches,
:math:`\Delta t = C\,\Delta t_{\text{prev}} / C_{\text{seen}}`, so the faster gap flows between
obstacles take more steps. Cost per sample: steps, grid-point updates (steps :math:`\times\ n_x n_y`,
machine-independent) and wall-clock seconds (compilation excluded). Snapshots are resampled to the
base grid by Fourier truncation, so every sample has the same shape.
"""

from __future__ import annotations

import math
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..brownian._args import as_key, positive_int
from ..errors import SolverError, check_range
from . import obstacles as _ob
from .grid import PeriodicGrid

__all__ = ["Design", "Dataset", "design", "generate", "cost_summary", "resample", "REFINEMENTS"]

#: Refinement factors the ``"auto"`` resolution may pick (each new grid compiles once).
REFINEMENTS = (1.0, 1.5, 2.0, 3.0, 4.0)


class Design(NamedTuple):
    """The inputs of each sample, before any solve (sorted by difficulty).

    Attributes:
        reynolds: ``(n,)``.
        n_obstacles: ``(n,)`` ints.
        obstacles: ``(n, m_max, 3)`` rows ``(x, y, radius)``, NaN past each sample's count.
        difficulty: ``(n,)`` the score :math:`d \\in [0, 1]`.
    """

    reynolds: np.ndarray
    n_obstacles: np.ndarray
    obstacles: np.ndarray
    difficulty: np.ndarray


class Dataset(NamedTuple):
    """Generated samples (NumPy arrays), sorted by difficulty.

    Attributes:
        grid: the output :class:`PeriodicGrid` (the base grid).
        design: the :class:`Design` (inputs).
        mask: ``(n, nx, ny)`` obstacle masks on the output grid.
        times: ``(n_snapshots,)`` snapshot times.
        vorticity: ``(n, n_snapshots, nx, ny)``.
        solver_shape: ``(n, 2)`` the grid each sample was solved on.
        steps: ``(n,)`` time steps taken.
        work: ``(n,)`` grid-point updates, :math:`\\sum \\text{steps} \\times n_x n_y`.
        wall_seconds: ``(n,)`` solve time, compilation excluded.
        max_cfl: ``(n,)`` the largest CFL number each run saw.
    """

    grid: PeriodicGrid
    design: Design
    mask: np.ndarray
    times: np.ndarray
    vorticity: np.ndarray
    solver_shape: np.ndarray
    steps: np.ndarray
    work: np.ndarray
    wall_seconds: np.ndarray
    max_cfl: np.ndarray


def _default_grid() -> PeriodicGrid:
    return PeriodicGrid(128, 64, 16.0, 8.0)


def _window(grid: PeriodicGrid, sponge_width: float, window):
    if window is None:  # the upstream half, leaving a wake of half the box before the sponge
        return (0.15 * grid.lx, 0.5 * grid.lx - 0.5 * sponge_width, 0.0, grid.ly)
    x0, x1, y0, y1 = (float(v) for v in window)
    if not (0.0 <= x0 < x1 <= grid.lx - sponge_width and 0.0 <= y0 < y1 <= grid.ly):
        raise ValueError(
            f"window must satisfy 0 <= x0 < x1 <= {grid.lx - sponge_width:g} (clear of the sponge) "
            f"and 0 <= y0 < y1 <= {grid.ly:g}, got {tuple(window)!r}"
        )
    return (x0, x1, y0, y1)


def _place(rng_u: np.ndarray, count: int, radius: float, window, min_gap: float) -> np.ndarray:
    """Greedy rejection sampling of ``count`` non-overlapping discs from uniform draws ``rng_u``."""
    x0, x1, y0, y1 = window
    lo = np.array([x0 + radius, y0 + radius])
    hi = np.array([x1 - radius, y1 - radius])
    if np.any(hi <= lo):
        raise ValueError(
            f"the placement window {window!r} is too small for obstacles of radius {radius:g}"
        )
    placed: list[np.ndarray] = []
    for u in rng_u:
        c = lo + u * (hi - lo)
        if all(np.hypot(*(c - p)) >= 2 * radius + min_gap for p in placed):
            placed.append(c)
            if len(placed) == count:
                return np.array([[p[0], p[1], radius] for p in placed])
    raise ValueError(
        f"could not place {count} obstacles of radius {radius:g} at least {min_gap:g} apart in the "
        f"window {tuple(round(w, 3) for w in window)}; lower n_obstacles or min_gap, or widen the window"
    )


def design(
    key,
    n_samples: int,
    reynolds_range=(20.0, 200.0),
    n_obstacles=(1, 3),
    *,
    grid: PeriodicGrid | None = None,
    radius=0.5,
    min_gap=0.5,
    window=None,
    sponge_width=None,
) -> Design:
    r"""Draw the samples' inputs from ``key``: :math:`Re`, obstacle counts and placements.

    Args:
        key: a ``jax.random`` key (it alone fixes the design).
        n_samples: int >= 1.
        reynolds_range: ``(Re_min, Re_max)``, ``0 < Re_min <= Re_max`` (log-uniform).
        n_obstacles: ``(m_min, m_max)`` ints, ``1 <= m_min <= m_max`` (uniform).
        grid: the base grid (default ``PeriodicGrid(128, 64, 16, 8)``, 8 points per unit).
        radius: cylinder radius (the reference length is its diameter).
        min_gap: least clearance between two obstacles.
        window: ``(x0, x1, y0, y1)`` where centres' discs must lie (default: the upstream half).
        sponge_width: as for :func:`~solverlab.fluids.obstacles.make_obstacle_flow` (default
            :math:`L_x/8`).

    Returns:
        :class:`Design`, sorted by difficulty (ties keep the draw order).
    """
    key = as_key(key)
    n_samples = positive_int("n_samples", n_samples)
    grid = _default_grid() if grid is None else grid
    re_lo, re_hi = (float(r) for r in reynolds_range)
    check_range("reynolds_range[0]", re_lo, low=0.0, low_open=True)
    check_range("reynolds_range[1]", re_hi, low=re_lo)
    m_lo = positive_int("n_obstacles[0]", n_obstacles[0])
    m_hi = positive_int("n_obstacles[1]", n_obstacles[1], low=m_lo)
    check_range("radius", radius, low=0.0, low_open=True)
    check_range("min_gap", min_gap, low=0.0)
    if sponge_width is None:  # make_obstacle_flow's default
        sponge_width = max(grid.lx / 8.0, _ob.MIN_SPONGE_POINTS * grid.dx)
    sponge_width = float(sponge_width)
    win = _window(grid, sponge_width, window)

    k_re, k_m, k_xy = jax.random.split(key, 3)
    u_re = np.asarray(jax.random.uniform(k_re, (n_samples,), dtype=jnp.float32), np.float64)
    reynolds = re_lo * (re_hi / re_lo) ** u_re
    counts = np.asarray(jax.random.randint(k_m, (n_samples,), m_lo, m_hi + 1))
    tries = 64 * m_hi
    draws = np.asarray(jax.random.uniform(k_xy, (n_samples, tries, 2), dtype=jnp.float32), np.float64)
    obstacles = np.full((n_samples, m_hi, 3), np.nan)
    for i in range(n_samples):
        obstacles[i, : counts[i]] = _place(draws[i], int(counts[i]), float(radius), win, float(min_gap))
    d_re = np.log(reynolds / re_lo) / math.log(re_hi / re_lo) if re_hi > re_lo else np.zeros(n_samples)
    d_m = (counts - m_lo) / (m_hi - m_lo) if m_hi > m_lo else np.zeros(n_samples)
    difficulty = 0.5 * (d_re + d_m)
    order = np.argsort(difficulty, kind="stable")
    return Design(reynolds[order], counts[order], obstacles[order], difficulty[order])


def resample(omega_hat, grid_from: PeriodicGrid, grid_to: PeriodicGrid) -> jax.Array:
    r"""A field given by its real FFT on ``grid_from`` evaluated on the coarser (or equal) ``grid_to``.

    Keeps the Fourier modes both grids hold, drops the rest (and the coarse Nyquist modes), and
    rescales for the grids' sizes: :math:`f(x) = \tfrac{1}{N}\sum_k \hat f_k e^{ikx}`.

    Returns:
        ``(grid_to.nx, grid_to.ny)`` physical field.
    """
    if (grid_from.lx, grid_from.ly) != (grid_to.lx, grid_to.ly) or grid_to.nx > grid_from.nx or grid_to.ny > grid_from.ny:
        raise ValueError("resample: grid_to must cover the same box with no more points than grid_from")
    nx, ny = grid_to.nx, grid_to.ny
    half = nx // 2
    kept = jnp.concatenate([omega_hat[:half, : ny // 2], omega_hat[grid_from.nx - half :, : ny // 2]], axis=0)
    kept = kept.at[half].set(0.0)  # the coarse grid's Nyquist row holds no unique mode
    kept = jnp.pad(kept, ((0, 0), (0, 1)))
    factor = (nx * ny) / (grid_from.nx * grid_from.ny)
    return grid_to.ifft(kept * factor)


def _refinement(reynolds: float, resolved: float, resolution: str) -> float:
    if resolution == "fixed":
        return 1.0
    # the refinement nearest (in ratio) to sqrt(Re / Re_resolved)
    need = math.sqrt(max(reynolds / resolved, 1.0))
    return min(REFINEMENTS, key=lambda f: abs(math.log(f / need)))


def _fine_grid(grid: PeriodicGrid, factor: float) -> PeriodicGrid:
    nx = 2 * round(grid.nx * factor / 2)
    ny = 2 * round(grid.ny * factor / 2)
    return PeriodicGrid(nx, ny, grid.lx, grid.ly)


def generate(
    key,
    n_samples: int,
    reynolds_range=(20.0, 200.0),
    n_obstacles=(1, 3),
    *,
    grid: PeriodicGrid | None = None,
    t_end=20.0,
    n_snapshots: int = 4,
    t_first=None,
    cfl=0.5,
    resolution: str = "auto",
    resolved_reynolds=None,
    radius=0.5,
    min_gap=0.5,
    window=None,
    perturbation=0.5,
    segments: int = 16,
    progress=None,
) -> Dataset:
    r"""Solve flow past random obstacles for ``n_samples`` samples of graded difficulty, with their cost.

    Each sample starts from uniform flow :math:`U = 1` (plus the small vortex kick of
    :func:`~solverlab.fluids.obstacles.simulate_obstacle_flow` behind its first obstacle) and runs
    to ``t_end``; the run is cut into at least ``segments`` pieces, and before each the step is
    re-chosen from the CFL number the last piece saw (target ``cfl``), landing exactly on the
    snapshot times.

    Args:
        key, n_samples, reynolds_range, n_obstacles, grid, radius, min_gap, window: see :func:`design`.
        t_end: final time (> 0).
        n_snapshots: snapshots per sample (int >= 1), equally spaced from ``t_first`` to ``t_end``.
        t_first: first snapshot time, in (0, t_end] (default ``t_end / 2``, past the start-up).
        cfl: target CFL number in (0, 1].
        resolution: ``"auto"``: refine the grid by the factor of :data:`REFINEMENTS` nearest (in
            ratio) to :math:`\sqrt{Re / Re_{res}}`, e.g. from ``resolved_reynolds`` 20: none up to
            30, 1.5 to 60, 2 to 120, 3 to 240; ``"fixed"``: every sample on ``grid``.
        resolved_reynolds: the :math:`Re` the base grid resolves (default ``reynolds_range[0]``).
        perturbation: circulation of the start-up kick in units of :math:`UD` (0 for none).
        segments: least number of CFL re-checks per run (int >= 1).
        progress: optional callable ``progress(i, n)`` after each sample.

    Returns:
        :class:`Dataset`. A blown-up sample raises ``SolverError`` naming it and the CFL number seen.
    """
    grid = _default_grid() if grid is None else grid
    if resolution not in ("auto", "fixed"):
        raise ValueError(f"resolution must be 'auto' or 'fixed', got {resolution!r}")
    check_range("t_end", t_end, low=0.0, low_open=True)
    t_end = float(t_end)
    n_snapshots = positive_int("n_snapshots", n_snapshots)
    t_first = 0.5 * t_end if t_first is None else t_first
    check_range("t_first", t_first, low=0.0, low_open=True, high=t_end)
    check_range("cfl", cfl, low=0.0, low_open=True, high=1.0)
    segments = positive_int("segments", segments)
    check_range("perturbation", perturbation)
    des = design(
        key, n_samples, reynolds_range, n_obstacles, grid=grid, radius=radius, min_gap=min_gap, window=window
    )
    resolved = float(reynolds_range[0]) if resolved_reynolds is None else resolved_reynolds
    check_range("resolved_reynolds", resolved, low=0.0, low_open=True)

    times = np.linspace(float(t_first), t_end, n_snapshots)
    # stops: the snapshot times, with the stretch before them split so there are >= `segments` pieces
    n_pre = max(1, segments - n_snapshots)
    stops = np.unique(np.concatenate([np.linspace(0.0, float(t_first), n_pre + 1)[1:], times]))
    compiled: set[tuple[int, int]] = set()
    n = n_samples
    masks = np.zeros((n,) + grid.shape)
    vort = np.zeros((n, n_snapshots) + grid.shape)
    shapes = np.zeros((n, 2), int)
    steps = np.zeros(n, int)
    work = np.zeros(n)
    seconds = np.zeros(n)
    max_cfl = np.zeros(n)
    for i in range(n):
        re = float(des.reynolds[i])
        obs = [_ob.Cylinder(*row) for row in des.obstacles[i, : des.n_obstacles[i]]]
        fine = _fine_grid(grid, _refinement(re, resolved, resolution))
        flow = _ob.make_obstacle_flow(fine, obs, 1.0, length=2.0 * float(radius))
        masks[i] = np.asarray(_ob.obstacle_mask(grid, obs))
        shapes[i] = fine.shape
        d = float(flow.length)
        vortex = (obs[0].x + d, obs[0].y + 0.5 * d, float(perturbation) * d, 0.25 * d) if perturbation else None
        state = _ob.initial_state(flow, vortex=vortex)
        dt_cap = _ob.stable_dt(flow, 1.0)
        dt = _ob.stable_dt(flow, cfl)
        if fine.shape not in compiled:  # compile outside the timed solve
            jax.block_until_ready(_ob.obstacle_advance_dynamic(flow, state, re, dt, 0))
            compiled.add(fine.shape)
        t, snap, seen = 0.0, 0, 0.0
        for stop in stops:
            m = max(1, math.ceil((stop - t) / dt - 1e-9))
            h = (stop - t) / m
            start = time.perf_counter()  # time the solve only, not the snapshots' resampling
            state, c, ok = _ob.obstacle_advance_dynamic(flow, state, re, h, m)
            c, ok = float(c), bool(ok)
            seconds[i] += time.perf_counter() - start
            if not ok:
                raise SolverError(
                    f"sample {i} (Re = {re:.4g}, {len(obs)} obstacles) blew up before t = {stop:.4g}: "
                    f"the CFL number reached {c:.3g} (limit {_ob.CFL_BLOWUP:.3g}) with dt = {h:.3g}; "
                    f"try a smaller cfl or a finer grid"
                )
            steps[i] += m
            seen = max(seen, c)
            t = float(stop)
            # next step from the CFL number just seen: dt C_target / C_seen, growing at most 25 %
            dt = min(dt_cap, 1.25 * h, h * float(cfl) / max(c, 1e-12))
            if snap < n_snapshots and abs(t - times[snap]) < 1e-9 * max(1.0, t_end):
                vort[i, snap] = np.asarray(resample(state.omega_hat, fine, grid))
                snap += 1
        work[i] = steps[i] * fine.nx * fine.ny
        max_cfl[i] = seen
        if progress is not None:
            progress(i, n)
    return Dataset(grid, des, masks, times, vort, shapes, steps, work, seconds, max_cfl)


def cost_summary(dataset: Dataset, n_reynolds_bins: int = 3) -> dict:
    r"""Solver cost against the two difficulty axes.

    Returns:
        A dict with ``"by_obstacles"``: ``{m: {"samples", "mean_steps", "mean_work",
        "mean_seconds"}}``; ``"by_reynolds"``: the same over ``n_reynolds_bins`` log-spaced bins,
        each with its ``"range"``; ``"by_difficulty"``: the same over difficulty terciles; and
        ``"work_vs_reynolds_slope"``: the least-squares slope of :math:`\log` work against
        :math:`\log Re` (about 1.5 when the grid is refined as :math:`Re^{1/2}`: :math:`Re` for the
        points, :math:`Re^{1/2}` for the steps).
    """
    n_reynolds_bins = positive_int("n_reynolds_bins", n_reynolds_bins)
    des = dataset.design

    def stats(sel):
        return {
            "samples": int(sel.sum()),
            "mean_steps": float(dataset.steps[sel].mean()) if sel.any() else float("nan"),
            "mean_work": float(dataset.work[sel].mean()) if sel.any() else float("nan"),
            "mean_seconds": float(dataset.wall_seconds[sel].mean()) if sel.any() else float("nan"),
        }

    by_m = {int(m): stats(des.n_obstacles == m) for m in np.unique(des.n_obstacles)}
    re = des.reynolds
    edges = np.geomspace(re.min(), re.max(), n_reynolds_bins + 1) if re.max() > re.min() else np.array([re.min(), re.max()])
    by_re = []
    for j in range(len(edges) - 1):
        last = j == len(edges) - 2
        sel = (re >= edges[j]) & ((re <= edges[j + 1]) if last else (re < edges[j + 1]))
        by_re.append({"range": (float(edges[j]), float(edges[j + 1])), **stats(sel)})
    q = np.quantile(des.difficulty, [0.0, 1 / 3, 2 / 3, 1.0])
    by_d = []
    for j in range(3):
        sel = (des.difficulty >= q[j]) & ((des.difficulty <= q[j + 1]) if j == 2 else (des.difficulty < q[j + 1]))
        by_d.append({"range": (float(q[j]), float(q[j + 1])), **stats(sel)})
    slope = float("nan")
    if re.max() > re.min() and len(re) >= 2:
        slope = float(np.polyfit(np.log(re), np.log(dataset.work), 1)[0])
    return {"by_obstacles": by_m, "by_reynolds": by_re, "by_difficulty": by_d, "work_vs_reynolds_slope": slope}
