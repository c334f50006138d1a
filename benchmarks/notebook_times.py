"""Wall time of each course notebook under nbval, with a cold and a warm compilation cache.

Target: every chapter well under 90 s on 2 CPU cores. Each notebook runs in its own pytest process,
first with an empty JAX compilation cache (a learner's first run), then again with the cache it
filled (every later run).

    python benchmarks/notebook_times.py [--no-write]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _harness import machine, versions, write_section

ROOT = Path(__file__).resolve().parents[1]


def run(notebook: Path, cache_dir: str) -> float:
    env = dict(os.environ, SOLVERLAB_CACHE_DIR=cache_dir)
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    cmd = [sys.executable, "-m", "pytest", "-q", "--nbval-lax", str(notebook),
           "--nbval-sanitize-with", str(ROOT / "course" / "nbval_sanitize.cfg"), "-p", "no:cacheprovider"]
    start = time.perf_counter()
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"{notebook.name} failed under nbval:\n{out.stdout[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    rows, load = [], os.getloadavg()[0]
    for notebook in sorted((ROOT / "course").glob("[0-9][0-9]_*.ipynb")):
        with tempfile.TemporaryDirectory() as cache:
            cold = run(notebook, cache)
            warm = run(notebook, cache)
        rows.append(f"| {notebook.name} | {cold:.1f} | {warm:.1f} | {'yes' if cold < 90 else 'NO'} |")
        print(rows[-1], flush=True)
    body = "\n".join([
        "## Notebook run times (nbval, whole pytest process)",
        "",
        f"Machine: {machine()}. Versions: {versions('jax', 'nbval', 'panel')}. "
        f"Load average at the start: {load:.1f} (the other runs on the machine slow every row alike).",
        "",
        "| notebook | cold cache (s) | warm cache (s) | under 90 s |",
        "|---|---|---|---|",
        *rows,
    ])
    print(body)
    if not args.no_write:
        write_section("notebooks", body)


if __name__ == "__main__":
    main()
