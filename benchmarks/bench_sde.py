"""SDE solves of many paths: SolverLab against Diffrax, same method, same step or tolerance, one run.

Work: 1,000 paths on [0, 1], each driven by its own Brownian tree (same tolerance for both
libraries), vmapped in one jitted call, float32. Constant steps of 2^-6 for Euler-Maruyama and
Milstein (Ito GBM), stochastic Heun (Stratonovich GBM) and ShARK (additive noise, nonlinear drift);
adaptive stochastic Heun with a PI(D) controller at rtol = atol = 1e-3. Reports the strong error at
t = 1 (GBM: against the exact solution from the path's W; ShARK: against the same library at a 64x
smaller step on the same tree), the mean number of steps and the wall time; target: no slower than
Diffrax at equal error for the same method.

    python benchmarks/bench_sde.py [--paths 1000] [--repeats 7] [--no-write]
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

from _harness import device_kind, machine, time_call, versions, write_section

MU, SIGMA = 0.5, 0.8
T1 = 1.0


def problems():
    from solverlab import sde

    gbm_ito = sde.SDE(lambda t, y, a: MU * y, lambda t, y, a: SIGMA * y, "diagonal", "ito")
    gbm_str = sde.SDE(lambda t, y, a: MU * y, lambda t, y, a: SIGMA * y, "diagonal", "stratonovich")
    additive = sde.SDE(lambda t, y, a: jnp.sin(y) - y**3, lambda t, y, a: 0.5 * jnp.ones_like(y),
                       "additive")
    exact_ito = lambda w: jnp.exp((MU - 0.5 * SIGMA**2) * T1 + SIGMA * w)  # noqa: E731
    exact_str = lambda w: jnp.exp(MU * T1 + SIGMA * w)  # noqa: E731
    return [
        # label, our SDE, our solver, diffrax solver name, exact(W) or None, levy area
        ("Euler-Maruyama", gbm_ito, sde.EulerMaruyama(), "Euler", exact_ito, None),
        ("Milstein", gbm_ito, sde.Milstein(), "ItoMilstein", exact_ito, None),
        ("stochastic Heun", gbm_str, sde.Heun(), "Heun", exact_str, None),
        ("ShARK", additive, sde.ShARK(), "ShARK", None, "space-time"),
    ]


def ours_batch(eq, solver, dt, tol, levy, controller=None, max_steps=4096):
    from solverlab import sde
    from solverlab.brownian import BrownianTree

    def one(key):
        tree = BrownianTree(0.0, T1, tol, (), key, levy_area=levy)
        sol = sde.solve(eq, solver, jnp.ones(()), 0.0, T1, dt=dt, brownian=tree,
                        controller=controller, max_steps=max_steps, check=False)
        # A failed solve (result != 0) would stop early: make it count as NaN, not as an error.
        y1 = jnp.where(sol.result == 0, sol.y1, jnp.nan)
        return y1, tree.evaluate(0.0, T1).W, sol.n_steps

    return jax.jit(jax.vmap(one))


def diffrax_batch(eq, name, dt, tol, levy, controller=None, max_steps=4096):
    import diffrax

    solver = getattr(diffrax, name)()
    levy_cls = diffrax.SpaceTimeLevyArea if levy else diffrax.BrownianIncrement

    def one(key):
        bm = diffrax.VirtualBrownianTree(0.0, T1, tol, (), key, levy_area=levy_cls)
        terms = diffrax.MultiTerm(diffrax.ODETerm(eq.drift), diffrax.ControlTerm(eq.diffusion, bm))
        sol = diffrax.diffeqsolve(
            terms, solver, 0.0, T1, dt, jnp.ones(()), saveat=diffrax.SaveAt(t1=True),
            stepsize_controller=controller or diffrax.ConstantStepSize(), max_steps=max_steps,
        )
        return sol.ys[-1], bm.evaluate(0.0, T1), sol.stats["num_accepted_steps"]

    return jax.jit(jax.vmap(one))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paths", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    import diffrax

    from solverlab import sde

    jax.config.update("jax_enable_x64", False)
    keys = jax.random.split(jax.random.key(0), args.paths)
    dt = 2.0**-6
    rows = []

    def record(label, mode, ours_fn, theirs_fn, exact, ours_ref=None, theirs_ref=None):
        out = {}
        for who, fn, ref in (("ours", ours_fn, ours_ref), ("diffrax", theirs_fn, theirs_ref)):
            timing = time_call(fn, keys, repeats=args.repeats)
            y1, w, steps = fn(keys)
            truth = exact(w) if exact is not None else ref(keys)[0]
            err = jnp.abs(y1 - truth)
            if not bool(jnp.all(jnp.isfinite(err))):
                raise SystemExit(f"{label} ({who}): {int(jnp.sum(~jnp.isfinite(err)))} solves failed")
            out[who] = (timing["median"], float(jnp.mean(err)), float(jnp.mean(steps)))
        (ta, ea, sa), (tb, eb, sb) = out["ours"], out["diffrax"]
        rows.append(f"| {label} | {mode} | {ea:.2e} | {eb:.2e} | {sa:.1f} | {sb:.1f} | {ta * 1e3:.1f} "
                    f"| {tb * 1e3:.1f} | **{ta / tb:.2f}** |")
        print(rows[-1], flush=True)

    for label, eq, solver, name, exact, levy in problems():
        tol = dt / 8
        ours_ref = theirs_ref = None
        if exact is None:
            ours_ref = ours_batch(eq, solver, dt / 64, tol / 64, levy)
            theirs_ref = diffrax_batch(eq, name, dt / 64, tol / 64, levy)
            tol = tol / 64  # the solves under test must use the reference's tree
        record(label, "dt = 2^-6", ours_batch(eq, solver, dt, tol, levy),
               diffrax_batch(eq, name, dt, tol, levy), exact, ours_ref, theirs_ref)

    eq, solver, exact = problems()[2][1], sde.Heun(), problems()[2][4]
    tol = 2.0**-20  # tree tol = dt_min for both; a coarser dt_min makes some of our solves stop (result 2)
    ours_pi = sde.PIController(rtol=1e-3, atol=1e-3, dt_min=tol)
    theirs_pi = diffrax.PIDController(rtol=1e-3, atol=1e-3, pcoeff=0.0, icoeff=1.0, dtmin=tol)
    record("stochastic Heun", "adaptive, rtol = atol = 1e-3",
           ours_batch(eq, solver, 0.1, tol, None, ours_pi, max_steps=16384),
           diffrax_batch(eq, "Heun", 0.1, tol, None, theirs_pi, max_steps=16384), exact)

    body = "\n".join([
        f"## SDE solves vs diffrax ({device_kind()})",
        "",
        f"{args.paths:,} paths, one Brownian tree each (same tol in both libraries), one vmapped jitted "
        f"call, float32; median of {args.repeats} runs after compilation. Error: mean |Y_1 - truth|. "
        "Target: time ratio <= 1 at equal error for the same method. The adaptive rows use different "
        "controllers (ours: PI with the module's defaults; diffrax: PIDController with icoeff=1, pcoeff=0), "
        "so compare their errors and steps as well as time.",
        "",
        f"Machine: {machine()}. Versions: {versions('jax', 'diffrax', 'solverlab')}.",
        "",
        "| method | steps | error ours | error diffrax | mean steps ours | mean steps diffrax "
        "| ours (ms) | diffrax (ms) | time ratio |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
    ])
    print(body)
    if not args.no_write:
        write_section(f"sde-{device_kind()}", body)


if __name__ == "__main__":
    main()
