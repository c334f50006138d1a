"""Periodic 2-D Navier-Stokes: our pseudo-spectral ETDRK solver against exponax (ETDRK2) and jax-cfd (CN-RK4).

Work (the same for every solver): decaying turbulence on the 2*pi box from one initial vorticity
(`decaying_turbulence`, San & Staples spectrum, peak k_p = 4, energy 1/2, so the rms speed is 1),
viscosity nu = 1e-3 (Re = U L / nu = 1000 with U the rms speed and L = 2*pi/(2*pi)), no forcing.
Each solver advances the spectral vorticity n steps in one jitted call:

- ours: `solverlab.fluids.periodic.advance` (ETDRK4 and ETDRK2; nu and dt traced, so the ETD
  coefficients are recomputed inside every call, and that cost is in our times);
- exponax 0.2.0: `NavierStokesVorticity(order=2)` (its default ETDRK2; order=4 as well) through
  `RepeatedStepper(...).step_fourier` under `eqx.filter_jit` (coefficients built once, outside the
  timing). exponax's vorticity has the opposite sign (its psi solves Laplace(psi) = omega), so it
  is fed -omega and its result negated; that it then agrees with ours is checked below;
- jax-cfd 0.2.1: `spectral.equations.NavierStokes2D(smooth=True)` stepped by
  `spectral.time_stepping.crank_nicolson_rk4` and `base.funcutils.repeated`.

1. Step time at 256^2 and 512^2, float32 and float64, at the same dt (CFL number 0.25 of the initial
   field): median over interleaved runs (compile apart), divided by n; ratios are the median over
   the rounds of the two solvers' times in the same round (the load of other users cancels).
2. Accuracy per cost at 256^2, float64: each solver's relative L2 error of the vorticity at
   T = 0.25 against its own run with 1024 steps, for n = 32..256 steps (the three codes truncate
   the spectrum at slightly different wavenumbers, which alone makes them differ by ~2e-6 at
   t = 0.25 and ~6e-4 at t = 0.5 as the cascade fills the top modes: reported, and the reason a
   shared reference would measure space, not time). Cost = steps x the step time of part 1; at
   error thresholds the steps each solver needs are interpolated in log-log, and never fewer than
   its stability allows:
3. Stability: the largest CFL number of 0.3, 0.6, 1.2 at which each solver runs decaying
   turbulence at 128^2 to t = 10 without blowing up (a long run is limited by this, not by accuracy).

Target (issue 6): ours no slower than exponax per step at equal accuracy.

    python benchmarks/bench_fluids.py [--repeats 9] [--no-write] [--quick]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from _harness import device_kind, machine, time_call, versions, write_section

NU, PEAK, ENERGY, T_ACC = 1e-3, 4.0, 0.5, 0.25
STEP_CFL = 0.25
SIZES = {256: 20, 512: 10}  # grid -> steps per timed call
LADDER, N_REF = (32, 64, 128, 256), 1024
STAB_GRID, STAB_T, STAB_CFLS = 128, 10.0, (0.3, 0.6, 1.2)
THRESHOLDS = (1e-3, 1e-5, 1e-7)


def initial(n, dtype):
    from solverlab.fluids import PeriodicGrid
    from solverlab.fluids.periodic import decaying_turbulence

    grid = PeriodicGrid.square(n)
    return grid, decaying_turbulence(jax.random.key(0), grid, PEAK, ENERGY, dtype=dtype)


# --- the solvers, each: (fn, arg) with fn(arg) -> spectral vorticity after the steps ----------------


def ours(grid, omega0, dt, steps, method):
    from solverlab.fluids.periodic import advance

    w0 = grid.fft(omega0)
    return (lambda w: advance(w, grid, NU, dt, steps, method=method).omega_hat), w0


def exponax_solver(grid, omega0, dt, steps, order):
    import equinox as eqx
    import exponax as ex

    stepper = ex.stepper.NavierStokesVorticity(2, grid.lx, grid.nx, dt, diffusivity=NU, order=order)
    repeated = ex.RepeatedStepper(stepper, steps)
    run = eqx.filter_jit(lambda s, u: s.step_fourier(u))
    u0 = jnp.fft.rfft2(-omega0)[None]  # exponax's omega is minus ours
    return (lambda u: run(repeated, u)), u0


def jaxcfd_solver(grid, omega0, dt, steps):
    import jax_cfd.base as cfd
    import jax_cfd.spectral as spectral

    cgrid = cfd.grids.Grid(grid.shape, domain=((0, grid.lx), (0, grid.ly)))
    eq = spectral.equations.NavierStokes2D(NU, cgrid, smooth=True)
    run = jax.jit(cfd.funcutils.repeated(spectral.time_stepping.crank_nicolson_rk4(eq, dt), steps))
    return run, jnp.fft.rfft2(omega0)


SOLVERS = {
    "ours ETDRK4": lambda g, w, dt, n: ours(g, w, dt, n, "etdrk4"),
    "ours ETDRK2": lambda g, w, dt, n: ours(g, w, dt, n, "etdrk2"),
    "exponax ETDRK2": lambda g, w, dt, n: exponax_solver(g, w, dt, n, 2),
    "exponax ETDRK4": lambda g, w, dt, n: exponax_solver(g, w, dt, n, 4),
    "jax-cfd CN-RK4": jaxcfd_solver,
}


def to_ours(name, out):
    """A solver's final spectral state in our convention (shape (nx, ny//2+1), our sign)."""
    return -out[0] if name.startswith("exponax") else out


def interleaved(calls: dict, repeats: int) -> dict:
    """Compile apart (first call, via time_call), then `repeats` rounds running each solver once in turn."""
    first = {name: time_call(fn, arg, repeats=1) for name, (fn, arg) in calls.items()}
    runs = {name: [] for name in calls}
    for r in range(repeats):
        order = list(calls) if r % 2 == 0 else list(reversed(calls))  # no solver always runs first
        for name in order:
            fn, arg = calls[name]
            t0 = time.perf_counter()
            jax.block_until_ready(fn(arg))
            runs[name].append(time.perf_counter() - t0)
    return {name: {"median": statistics.median(runs[name]), "min": min(runs[name]), "runs": runs[name],
                   "compile": max(first[name]["compile"] + first[name]["median"] - statistics.median(runs[name]), 0.0)}
            for name in calls}


def paired(res: dict, a: str, b: str) -> float:
    """Median over the rounds of a's time / b's time in the same round: slow drifts of the other
    load on the machine cancel, which they do not in a ratio of medians."""
    return statistics.median(x / y for x, y in zip(res[a]["runs"], res[b]["runs"]))


def step_dt(grid, omega0):
    from solverlab.fluids import diagnostics

    return STEP_CFL / float(diagnostics.max_speed(grid.fft(omega0), grid))


def rel_error(a, b):
    return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


def steps_for(errors: dict, eps: float):
    """Steps to reach error eps: log-log interpolation of error vs steps, extrapolated (flagged) with
    the nearest local order outside the measured range; None when fewer than two finite points."""
    pts = sorted((n, e) for n, e in errors.items() if np.isfinite(e) and e > 0)
    if len(pts) < 2:
        return None, False
    ns, es = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
    target = math.log(eps)
    for i in range(len(pts) - 1):
        if es[i] >= target >= es[i + 1]:
            f = (target - es[i]) / (es[i + 1] - es[i])
            return math.exp(ns[i] + f * (ns[i + 1] - ns[i])), False
    i = 0 if target > es[0] else len(pts) - 2
    slope = (es[i + 1] - es[i]) / (ns[i + 1] - ns[i])
    j = 0 if target > es[0] else len(pts) - 1
    return math.exp(ns[j] + (target - es[j]) / slope), True


def stable_cfl(make, grid, omega0, t_end) -> float:
    """Largest CFL number of STAB_CFLS (tried in order) at which a run to t_end stays finite and decays."""
    from solverlab.fluids import diagnostics

    w0 = grid.fft(omega0)
    e0, speed = float(diagnostics.energy(w0, grid)), float(diagnostics.max_speed(w0, grid))
    best = 0.0
    for cfl in STAB_CFLS:
        n = math.ceil(t_end * speed / cfl)
        fn, arg = make(grid, omega0, t_end / n, n)
        out = to_ours_any(fn(arg))
        ok = bool(jnp.all(jnp.isfinite(out))) and float(diagnostics.energy(out, grid)) <= e0
        if not ok:
            break
        best = cfl
    return best


def to_ours_any(out):
    return out[0] if out.ndim == 3 else out  # the sign does not matter for the energy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md")
    parser.add_argument("--quick", action="store_true", help="256^2 only, fewer steps (a smoke run)")
    args = parser.parse_args()
    jax.config.update("jax_enable_x64", True)  # float64 available; float32 rows pass float32 inputs
    load_before = os.getloadavg()[0]
    wall0 = time.perf_counter()
    sizes = {256: 10} if args.quick else SIZES
    t_stab = 1.0 if args.quick else STAB_T

    # 1. step time ------------------------------------------------------------------------------
    step_rows, per_step, same_scheme, timings = [], {}, {}, {}
    for n_grid, steps in sizes.items():
        for dtype in (jnp.float32, jnp.float64):
            # float32 rows run with x64 off, so the peers' own arrays (wavenumbers, coefficients) are
            # float32 too and nothing is promoted to complex128
            with jax.enable_x64(dtype == jnp.float64):
                grid, omega0 = initial(n_grid, dtype)
                dt = step_dt(grid, omega0)
                calls = {name: make(grid, omega0, dt, steps) for name, make in SOLVERS.items()}
                for name, (fn, arg) in calls.items():
                    got = jax.eval_shape(fn, arg).dtype
                    assert got == jnp.result_type(dtype, 1j), f"{name} runs in {got}, not {dtype}"
                res = interleaved(calls, args.repeats)
            ms = {name: r["median"] / steps * 1e3 for name, r in res.items()}
            fastest = {name: r["min"] / steps * 1e3 for name, r in res.items()}
            key = (n_grid, np.dtype(dtype).name)
            per_step[key], timings[key] = {k: v / 1e3 for k, v in ms.items()}, res
            same_scheme[key] = (paired(res, "ours ETDRK2", "exponax ETDRK2"),
                                fastest["ours ETDRK2"] / fastest["exponax ETDRK2"])

            def both(a, b):
                return f"{paired(res, a, b):.2f} ({fastest[a] / fastest[b]:.2f})"

            row = (f"| {n_grid}^2 | {np.dtype(dtype).name} | "
                   + " | ".join(f"{ms[name]:.3g}" for name in SOLVERS)
                   + f" | **{both('ours ETDRK2', 'exponax ETDRK2')}** | {both('ours ETDRK4', 'exponax ETDRK4')}"
                   + f" | {both('ours ETDRK4', 'jax-cfd CN-RK4')} | "
                   + ", ".join(f"{res[name]['compile']:.1f}" for name in SOLVERS) + " |")
            step_rows.append(row)
            print(row, flush=True)

    # 2. accuracy per cost (256^2, float64) -------------------------------------------------------
    grid, omega0 = initial(256, jnp.float64)
    ladder = LADDER[:3] if args.quick else LADDER
    n_ref = 256 if args.quick else N_REF
    errors, finals = {}, {}
    for name, make in SOLVERS.items():
        fn, arg = make(grid, omega0, T_ACC / n_ref, n_ref)
        ref = to_ours(name, fn(arg))
        finals[name] = ref
        errors[name] = {}
        for n in ladder:
            fn, arg = make(grid, omega0, T_ACC / n, n)
            out = to_ours(name, fn(arg))
            errors[name][n] = rel_error(out, ref) if bool(jnp.all(jnp.isfinite(out))) else math.inf
        print(name, {n: f"{e:.2e}" for n, e in errors[name].items()}, flush=True)
    cfl_at = {n: step_dt(grid, omega0) ** -1 * (T_ACC / n) * STEP_CFL for n in ladder}
    spatial = {name: rel_error(finals[name], finals["ours ETDRK4"]) for name in SOLVERS if name != "ours ETDRK4"}

    acc_rows = []
    for name in SOLVERS:
        es = errors[name]
        good = [(n, e) for n, e in es.items() if np.isfinite(e)]
        order = (np.polyfit(np.log([T_ACC / n for n, _ in good[-3:]]), np.log([e for _, e in good[-3:]]), 1)[0]
                 if len(good) >= 3 else float("nan"))
        acc_rows.append(f"| {name} | " + " | ".join("blew up" if not np.isfinite(es[n]) else f"{es[n]:.2e}"
                                                    for n in ladder) + f" | {order:.2f} |")
    # the step each solver can take for long runs (stability, not accuracy): 128^2 to t = 10
    with jax.enable_x64(True):
        g_stab, w_stab = initial(STAB_GRID, jnp.float64)
        limits = {name: stable_cfl(make, g_stab, w_stab, t_stab) for name, make in SOLVERS.items()}
    print("stable CFL", limits, flush=True)
    speed256 = STEP_CFL / step_dt(grid, omega0)
    cost_rows, verdict = [], []
    steps64 = per_step[(256, "float64")]
    for eps in THRESHOLDS:
        need = {}
        for name in SOLVERS:
            n_acc, extra = steps_for(errors[name], eps)
            n_stab = math.inf if limits[name] == 0 else T_ACC * speed256 / limits[name]
            need[name] = (None, False, False) if n_acc is None else (max(n_acc, n_stab), extra and n_acc >= n_stab,
                                                                     n_stab > n_acc)

        def show(name):
            n, extra, by_stability = need[name]
            if n is None or not math.isfinite(n):
                return "n/a"
            return f"{n * steps64[name] * 1e3:.0f} ({n:.0f}{'*' if extra else ''}{', s' if by_stability else ''})"

        def ratio(a, b):
            if need[a][0] is None or need[b][0] is None or not math.isfinite(need[a][0] * need[b][0]):
                return "n/a"
            return f"{need[a][0] / need[b][0] * paired(timings[(256, 'float64')], a, b):.2f}"

        cost_rows.append(f"| {eps:.0e} | " + " | ".join(show(name) for name in SOLVERS)
                         + f" | **{ratio('ours ETDRK4', 'exponax ETDRK2')}** | {ratio('ours ETDRK2', 'exponax ETDRK2')}"
                         + f" | {ratio('ours ETDRK4', 'exponax ETDRK4')} | {ratio('ours ETDRK4', 'jax-cfd CN-RK4')} |")
        verdict.append(f"{eps:.0e}: {ratio('ours ETDRK4', 'exponax ETDRK2')}")
    wall = time.perf_counter() - wall0

    met_step = all(med <= 1.0 for med, _ in same_scheme.values())
    met_fast = all(low <= 1.0 for _, low in same_scheme.values())
    body = "\n".join([
        f"## Periodic 2-D Navier-Stokes vs exponax and jax-cfd ({device_kind()})",
        "",
        "Decaying turbulence on the 2pi box (San & Staples spectrum, k_p = 4, E = 1/2, rms speed 1), "
        f"nu = {NU:g} (Re = 1000), the same initial vorticity and dt for every solver; each advances the "
        "spectral vorticity n steps in one jitted call. Ours: `solverlab.fluids.periodic.advance` "
        "(nu, dt traced: the ETD coefficients are recomputed in every call and counted); exponax 0.2.0 "
        "`NavierStokesVorticity` (order 2 = its default ETDRK2, and order 4) via `RepeatedStepper.step_fourier`; "
        "jax-cfd 0.2.1 `NavierStokes2D` + `crank_nicolson_rk4`. FFTs per step: ours 8 (ETDRK2) / 16 "
        "(ETDRK4; 4 per evaluation, Basdevant form), exponax 10 / 20 (5 per evaluation), jax-cfd 25.",
        "",
        f"Machine: {machine()}. Versions: {versions('jax', 'jaxlib', 'numpy', 'exponax', 'jax-cfd', 'equinox', 'solverlab')}. "
        f"Load average (1 min) before / after: {load_before:.1f} / {os.getloadavg()[0]:.1f}; "
        f"whole run {wall:.0f} s.",
        "",
        f"**Step time** (ms per step: median of {args.repeats} interleaved runs of "
        f"{', '.join(f'{s} steps at {g}^2' for g, s in sizes.items())}, dt at CFL {STEP_CFL} of the initial "
        "field; ratios: the median over the rounds of the two solvers' times in the same round, in "
        "brackets the ratio of their fastest runs, the two statistics the other load on this shared "
        "machine disturbs least):",
        "",
        "| grid | dtype | " + " | ".join(SOLVERS) + " | ours ETDRK2 / exponax ETDRK2 | ours ETDRK4 / exponax ETDRK4 "
        "| ours ETDRK4 / jax-cfd | compile (s) |",
        "|---|---|" + "---|" * (len(SOLVERS) + 4),
        *step_rows,
        "",
        f"**Accuracy** (256^2, float64): relative L2 error of the vorticity at t = {T_ACC} against the same "
        f"solver with {n_ref} steps; CFL number of the initial field "
        + ", ".join(f"{cfl_at[n]:.2f} at n = {n}" for n in ladder) + ". Order: slope of the last three points.",
        "",
        "| solver | " + " | ".join(f"n = {n}" for n in ladder) + " | order |",
        "|---|" + "---|" * (len(ladder) + 1),
        *acc_rows,
        "",
        "Between codes (each solver's reference against ours ETDRK4's, relative L2; for the second-order "
        "solvers this includes their own time error at the reference step): "
        + ", ".join(f"{name} {e:.1e}" for name, e in spatial.items())
        + ". The codes drop slightly different top modes (at n = 256: ours |k| <= 85 per axis, exponax "
        "<= 84, jax-cfd kx in [-85, 84] and ky <= 85): that, not time stepping, is the difference between "
        "codes.",
        "",
        f"**Stability** (largest CFL number of {', '.join(map(str, STAB_CFLS))} at which decaying turbulence at "
        f"{STAB_GRID}^2, same nu, runs to t = {t_stab:g} without blowing up): "
        + ", ".join(f"{name} {c:g}" for name, c in limits.items()) + ".",
        "",
        "**Cost at equal accuracy**: ms of 256^2 float64 step time (steps in brackets) to reach the error "
        "at t = 0.25, with the step no larger than the stable CFL number above (', s': the stability bound, "
        "not the error, sets the step, as it would in a long run); * extrapolated with the nearest local "
        "order. Ratios: steps needed times the paired step-time ratio.",
        "",
        "| error | " + " | ".join(SOLVERS) + " | ours ETDRK4 / exponax ETDRK2 | ours ETDRK2 / exponax ETDRK2 "
        "| ours ETDRK4 / exponax ETDRK4 | ours ETDRK4 / jax-cfd |",
        "|---|" + "---|" * (len(SOLVERS) + 4),
        *cost_rows,
        "",
        "Target (no slower than exponax per step at equal accuracy): same scheme, same dt, so the same "
        "error: ours ETDRK2 / exponax ETDRK2 per step = "
        + ", ".join(f"{med:.2f} ({low:.2f}) at {g}^2 {d}" for (g, d), (med, low) in same_scheme.items())
        + f" (paired medians (fastest runs): {'met in every row' if met_step else 'MISSED in some row'} "
        f"by the paired medians, {'met in every row' if met_fast else 'MISSED in some row'} by the fastest "
        f"runs). Cost at equal error, ours ETDRK4 / exponax ETDRK2: {'; '.join(verdict)}.",
    ])
    print(body)
    if not args.no_write:
        write_section(f"fluids-periodic-{device_kind()}", body)


if __name__ == "__main__":
    main()
