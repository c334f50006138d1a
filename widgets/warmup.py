"""Compile every dashboard's kernels into JAX's persistent compilation cache.

    python -m solverlab.widgets.warmup

Run once after installing (``make install`` and Binder's ``postBuild`` do): later processes (``panel
serve``, ``solverlab serve``, jupyter-panel-proxy, a notebook) then load the compiled kernels from
the cache instead of compiling them on the first page load.
"""

from __future__ import annotations

import sys
import time

__all__ = ["main"]


def main() -> int:
    import solverlab
    from solverlab.widgets import DASHBOARDS

    settings = solverlab.setup()  # float32, cache on: the same configuration the apps use
    for name, factory in DASHBOARDS.items():
        start = time.perf_counter()
        dashboard = factory()
        print(f"{name}: {dashboard.compile_count()} kernel variants ready in "
              f"{time.perf_counter() - start:.1f} s", file=sys.stderr)
    # The guidance dashboard compiles one step schedule at start-up; fill the cache with the others.
    from solverlab.widgets import guidance

    start = time.perf_counter()
    methods = guidance.guidance_methods()
    guidance.warm_up_kernels(methods, guidance.TIMESTEP_KINDS, methods)
    print(f"guidance: every method and step schedule ready in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    # The Reynolds dashboard compiles its default grid size at start-up; fill the cache with the others.
    from solverlab.widgets import reynolds

    for n in reynolds.GRID_SIZES:
        seconds = reynolds.warm_up_kernels(n)
        print(f"reynolds: grid size {n} ready in {seconds:.1f} s", file=sys.stderr)
    print(f"compilation cache: {settings['cache_dir']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
