"""Virtual Brownian Tree queries: SolverLab against Diffrax's VirtualBrownianTree, in one run.

Work: one jitted, vmapped call answering 10,000 random (s, t) pairs on [0, 1] with space-time Levy
area (W and H), float32, at tol 1e-3 and 1e-6. Compile time is reported apart. Target: our time at
most 0.5x Diffrax's at equal tol and Levy area.

    python benchmarks/bench_tree.py [--queries 10000] [--repeats 15] [--no-write]
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

from _harness import device_kind, machine, time_call, versions, write_section


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md")
    args = parser.parse_args()

    import diffrax

    from solverlab.brownian import BrownianTree

    jax.config.update("jax_enable_x64", False)
    u = jax.random.uniform(jax.random.key(0), (args.queries, 2))
    s, t = jnp.min(u, axis=1), jnp.max(u, axis=1)
    key = jax.random.key(1)
    rows = []
    for tol in (1e-3, 1e-6):

        @jax.jit
        def ours(s, t, tol=tol):
            return BrownianTree(0.0, 1.0, tol, (), key, levy_area="space-time").evaluate(s, t)

        vbt = diffrax.VirtualBrownianTree(0.0, 1.0, tol, (), key, levy_area=diffrax.SpaceTimeLevyArea)
        theirs = jax.jit(jax.vmap(lambda a, b: vbt.evaluate(a, b, use_levy=True)))
        # Interleave to share any drift in machine load between the two.
        a = time_call(ours, s, t, repeats=args.repeats)
        b = time_call(theirs, s, t, repeats=args.repeats)
        ratio = a["median"] / b["median"]
        rows.append(
            f"| {tol:g} | {a['median'] * 1e3:.2f} | {b['median'] * 1e3:.2f} | **{ratio:.2f}** "
            f"| {args.queries / a['median']:.3g} | {args.queries / b['median']:.3g} "
            f"| {a['compile']:.2f} / {b['compile']:.2f} |"
        )
        print(rows[-1], flush=True)

    body = "\n".join(
        [
            f"## Brownian tree queries vs diffrax ({device_kind()})",
            "",
            f"{args.queries:,} random (s, t) pairs in one vmapped call, space-time Levy area, float32; "
            f"median of {args.repeats} runs after compilation. Target: ratio <= 0.5.",
            "",
            f"Machine: {machine()}. Versions: {versions('jax', 'jaxlib', 'diffrax', 'solverlab')}.",
            "",
            "| tol | ours (ms) | diffrax (ms) | ratio ours/diffrax | ours queries/s | diffrax queries/s "
            "| compile ours / diffrax (s) |",
            "|---|---|---|---|---|---|---|",
            *rows,
        ]
    )
    print(body)
    if not args.no_write:
        write_section(f"tree-{device_kind()}", body)


if __name__ == "__main__":
    main()
