"""Lid-driven cavity: time to steady state at the default grid, and the distance from Ghia et al. (1982).

Work: `solverlab.fluids.cavity(Re)` from rest to the default residual tolerance at the default grid
(n = 128, Ghia's 129 x 129 nodes), Re = 100, 400 and 1000. Compile time is measured apart (one
`cavity_advance` call compiles the kernel that every later call reuses: Re and the step count are
traced), then the median of several full solves. Reported: steps, simulated time, final residual,
ms per step, the floor (the three DST Poisson solves a step needs, alone in a jitted loop), and the
largest deviation from Ghia, Ghia & Shin (1982) Tables I-III along both centrelines.

Ghia's tables come from `solverlab.fluids.ghia` (Re 100 and 400 from the shared reference data, Re 1000
and Table III from two public transcriptions that agree digit for digit; its docstring names them).

Peer: none runs. jax-cfd 0.2.1 ships no cavity, and its convection refuses a moving wall (van Leer:
"Non-periodic boundary conditions are not implemented"; convect_linear: "Flux boundary condition is
not implemented for velocity with ConstantBoundaryConditions(... bc_values=((0.0, 0.0), (0.0, 1.0)))"),
so a cavity would need our own convection inside it: not a peer run.

    python benchmarks/bench_cavity.py [--repeats 3] [--n 128] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from _harness import device_kind, machine, time_call, versions, write_section
from solverlab.fluids import ghia as ghia_data

REYNOLDS = (100, 400, 1000)
# Table II, Re = 400, x = 0.9063: a misprint (solverlab.fluids.ghia.SUSPECT); left out.
SUSPECT = {re: x for re, (_, x) in ghia_data.SUSPECT.items()}


def ghia(reynolds):
    """((y, u), (x, v)) of Ghia's centrelines (solverlab.fluids.ghia)."""
    return ghia_data.centerline_u(reynolds), ghia_data.centerline_v(reynolds)


def deviation(res, reynolds):
    (yg, ug), (xg, vg) = ghia(reynolds)
    y, u = res.centerline_u()
    x, v = res.centerline_v()
    keep = xg != SUSPECT.get(reynolds)
    du = np.abs(np.interp(yg, y, u) - ug).max()
    dv = np.abs(np.interp(xg, x, v) - vg)[keep].max()
    return du, dv


def poisson_floor(n, dtype, steps=200):
    """Seconds per step of the three DST solves alone (one per SSP-RK3 stage), jitted."""
    from solverlab.fluids.poisson import solve_dirichlet

    w = jax.random.normal(jax.random.key(0), (n - 1, n - 1), dtype)

    @jax.jit
    def loop(w):
        return jax.lax.fori_loop(0, 3 * steps, lambda i, w: w + 1e-3 * solve_dirichlet(w, 1.0 / n), w)

    return time_call(loop, w, repeats=5)["median"] / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n", type=int, default=None, help="grid (default: the solver's default)")
    parser.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md")
    args = parser.parse_args()

    from solverlab.fluids import lid_driven as cav

    n = args.n or cav.DEFAULT_N
    dtype = jnp.result_type(float)
    load_before = os.getloadavg()[0]
    floor = poisson_floor(n, dtype)
    rows = []
    for re in REYNOLDS:
        t0 = time.perf_counter()
        jax.block_until_ready(cav.cavity_advance(cav.cavity_init(n), float(re), 1))
        compile_s = time.perf_counter() - t0
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            res = cav.cavity(float(re), n)
            times.append(time.perf_counter() - t0)
        wall = statistics.median(times)
        per_step = wall / res.steps
        du, dv = deviation(res, re)
        psi, x, y = res.psi_min
        psi_g, xg, yg = ghia_data.PRIMARY_VORTEX[re]
        dev = "n/a" if du is None else f"{du:.4f} / {dv:.4f}"
        rows.append(
            f"| {re} | {n} | {wall:.2f} | {min(times):.2f} | {compile_s:.2f} | {res.steps} | {res.time:.1f} "
            f"| {res.dt:.4g} | {res.cfl:.2f} | {res.residual[-1]:.1e} | {per_step * 1e3:.3f} "
            f"| {per_step / floor:.2f} | {dev} | {psi:.5f} ({psi_g:.5f}) at ({x:.4f}, {y:.4f}) |"
        )
        print(rows[-1], flush=True)
    body = "\n".join(
        [
            f"## Lid-driven cavity: time to steady state and distance from Ghia et al. (1982) ({device_kind()})",
            "",
            f"`solverlab.fluids.cavity(Re)` at its defaults: n = {n} ({n + 1}^2 nodes), "
            f"cfl = {cav.DEFAULT_CFL:g}, tol = {cav.DEFAULT_TOL:g} (velocity rate of change per flow time), "
            f"{np.dtype(dtype).name}; vorticity-streamfunction, central differences, Jensen wall vorticity, "
            "SSP-RK3, one DST Poisson solve per stage. Wall time from rest to the stopping rule, median "
            f"of {args.repeats} solves; compile apart (one `cavity_advance` call: Re and the step count are "
            "traced, so the solves reuse it, and Re 400 and 1000 reuse Re 100's: 0.00). Floor: the three DST solves of a step alone in a jitted loop "
            f"({floor * 1e3:.3f} ms per step). Ghia: max |ours - Ghia| over Tables I (u at x = 0.5) and "
            "II (v at y = 0.5), ours interpolated linearly to their points; Re 100/400 from shared/data "
            "(Re 400 without the misprinted v at x = 0.9063), Re 1000 typed from two public "
            "transcriptions (see the script). Vortex: node minimum of psi (Ghia Table III in brackets).",
            "",
            f"Machine: {machine()}. Versions: {versions('jax', 'jaxlib', 'numpy', 'solverlab')}. "
            f"Load average (1 min) before / after: {load_before:.1f} / {os.getloadavg()[0]:.1f}.",
            "",
            "| Re | n | steady (s) | fastest (s) | compile (s) | steps | t (lid units) | dt | CFL seen "
            "| final residual | ms/step | step/floor | max dev u / v | psi_min (Ghia) at (x, y) |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
            *rows,
            "",
            "No peer: jax-cfd 0.2.1 ships no cavity and its convection raises NotImplementedError for a "
            "moving-wall velocity (inhomogeneous Dirichlet), so it cannot run one without new code.",
        ]
    )
    print(body)
    if not args.no_write:
        write_section(f"fluids-cavity-{device_kind()}", body)


if __name__ == "__main__":
    main()
