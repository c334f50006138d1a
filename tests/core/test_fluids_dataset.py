"""The multi-difficulty data generator: its design from a key, the solves, and what they cost."""

import jax
import numpy as np
import pytest

from solverlab.fluids import dataset as ds
from solverlab.fluids import obstacles as ob
from solverlab.fluids.grid import PeriodicGrid

BASE = PeriodicGrid(128, 64, 16.0, 8.0)
# for the solves: a 12 x 6 box at 16/3 points per unit, short runs
TINY = PeriodicGrid(64, 32, 12.0, 6.0)


def test_design_is_fixed_by_the_key_and_valid():
    kw = dict(grid=BASE, radius=0.5, min_gap=0.5)
    a = ds.design(jax.random.key(3), 40, (20.0, 200.0), (1, 4), **kw)
    b = ds.design(jax.random.key(3), 40, (20.0, 200.0), (1, 4), **kw)
    c = ds.design(jax.random.key(4), 40, (20.0, 200.0), (1, 4), **kw)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.reynolds, c.reynolds)
    assert np.all((a.reynolds >= 20.0) & (a.reynolds <= 200.0))
    assert set(np.unique(a.n_obstacles)) <= {1, 2, 3, 4} and len(np.unique(a.n_obstacles)) >= 3
    assert np.all(np.diff(a.difficulty) >= 0) and 0.0 <= a.difficulty.min() <= a.difficulty.max() <= 1.0
    x0, x1 = 0.15 * BASE.lx, 0.5 * BASE.lx - 0.5 * BASE.lx / 8  # the default window (upstream half)
    for i, (m, rows) in enumerate(zip(a.n_obstacles, a.obstacles)):
        assert np.all(np.isnan(rows[m:])) and not np.any(np.isnan(rows[:m]))
        xy, r = rows[:m, :2], rows[:m, 2]
        assert np.all(xy[:, 0] - r >= x0) and np.all(xy[:, 0] + r <= x1)
        assert np.all(xy[:, 1] - r >= 0.0) and np.all(xy[:, 1] + r <= BASE.ly)
        gaps = np.hypot(*(xy[:, None, :] - xy[None, :, :]).transpose(2, 0, 1)) - (r[:, None] + r[None, :])
        assert np.all(gaps[~np.eye(m, dtype=bool)] >= 0.5 - 1e-12)  # clear of each other by min_gap
        if i % 8 == 0:  # a drawn layout is one make_obstacle_flow accepts (inside, clear of the sponge)
            ob.make_obstacle_flow(BASE, [tuple(row) for row in rows[:m]])


def test_design_refuses_bad_input():
    key = jax.random.key(0)
    with pytest.raises(ValueError, match=r"reynolds_range\[0\] must lie in \(0, inf\), got -1"):
        ds.design(key, 4, (-1.0, 10.0), (1, 2), grid=BASE)
    with pytest.raises(ValueError, match=r"reynolds_range\[1\] must lie in \[50, inf\), got 10"):
        ds.design(key, 4, (50.0, 10.0), (1, 2), grid=BASE)
    with pytest.raises(ValueError, match=r"n_obstacles\[0\] must be an int >= 1, got 0"):
        ds.design(key, 4, (20.0, 80.0), (0, 2), grid=BASE)
    with pytest.raises(ValueError, match="could not place 12 obstacles"):
        ds.design(key, 1, (20.0, 80.0), (12, 12), grid=BASE)
    with pytest.raises(ValueError, match="key must be a jax.random key"):
        ds.design(0, 4, (20.0, 80.0), (1, 2), grid=BASE)
    with pytest.raises(ValueError, match="window must satisfy"):
        ds.design(key, 4, (20.0, 80.0), (1, 2), grid=BASE, window=(2.0, 15.5, 0.0, 8.0))
    with pytest.raises(ValueError, match="resolution must be 'auto' or 'fixed'"):
        ds.generate(key, 1, (20.0, 80.0), (1, 1), grid=TINY, t_end=1.0, resolution="fine")


def test_resample_keeps_the_modes_both_grids_hold():
    fine, coarse = PeriodicGrid(64, 48, 12.0, 6.0), PeriodicGrid(32, 16, 12.0, 6.0)

    def field(g):
        x, y = g.mesh()
        return np.cos(2 * np.pi * 3 * x / 12.0 + 0.3) * np.sin(2 * np.pi * 2 * y / 6.0) + 0.5

    out = ds.resample(fine.fft(field(fine)), fine, coarse)
    np.testing.assert_allclose(np.asarray(out), field(coarse), atol=1e-5)


def test_generate_records_samples_and_their_cost():
    kw = dict(grid=TINY, t_end=3.0, n_snapshots=2, segments=6)
    data = ds.generate(jax.random.key(7), 4, (20.0, 50.0), (1, 2), **kw)
    again = ds.generate(jax.random.key(7), 4, (20.0, 50.0), (1, 2), **kw)
    n = 4
    assert data.vorticity.shape == (n, 2) + TINY.shape and data.mask.shape == (n,) + TINY.shape
    np.testing.assert_array_equal(data.vorticity, again.vorticity)  # deterministic for a fixed key
    np.testing.assert_array_equal(data.steps, again.steps)
    np.testing.assert_allclose(data.times, [1.5, 3.0])
    assert np.all(np.isfinite(data.vorticity)) and np.all(np.abs(data.vorticity).max(axis=(2, 3)) > 0.1)
    # the masks are the obstacles on the output grid
    for i in range(n):
        m = data.design.n_obstacles[i]
        want = ob.obstacle_mask(TINY, [tuple(r) for r in data.design.obstacles[i, :m]])
        np.testing.assert_allclose(data.mask[i], np.asarray(want))
    # cost: recorded for every sample, work = steps x points of the grid it was solved on
    assert np.all(data.steps > 0) and np.all(data.wall_seconds > 0)
    np.testing.assert_array_equal(data.work, data.steps * data.solver_shape.prod(axis=1))
    assert np.all(data.max_cfl < ob.CFL_BLOWUP)
    # "auto": Re <= 30 stays on the base grid, above it the grid is 1.5 x finer (Re^(1/2) nearest
    # the ladder), and those samples cost more than any on the base grid: points x steps grow by
    # ~1.5^3 = 3.4 against a spread in steps from the gap flows of well under 2
    refined = data.solver_shape[:, 0] > TINY.nx
    assert np.all(data.solver_shape[refined] == (96, 48))
    assert np.all(refined == (data.design.reynolds > 30.0))
    if refined.any() and (~refined).any():
        assert data.work[refined].min() > data.work[~refined].max()
    summary = ds.cost_summary(data)
    assert sum(row["samples"] for row in summary["by_difficulty"]) == n
    assert summary["work_vs_reynolds_slope"] > 0
    assert set(summary["by_obstacles"]) <= {1, 2}
