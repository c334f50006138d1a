"""The one place where SolverLab configures JAX.

Notebooks and dashboards call :func:`setup` first. Nothing else in the package changes JAX's global
configuration, so importing :mod:`solverlab` never has side effects.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax

__all__ = ["setup", "default_cache_dir"]


def default_cache_dir() -> Path:
    """Where the persistent compilation cache lives: ``$SOLVERLAB_CACHE_DIR``, else the user cache dir."""
    env = os.environ.get("SOLVERLAB_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "solverlab" / "jax"


def setup(*, x64: bool = False, cache_dir: str | os.PathLike | None = None, cache: bool = True) -> dict:
    """Configure JAX for a chapter or a dashboard.

    Args:
        x64: use float64 by default (``jax_enable_x64``). Chapters that study convergence orders or
            conservation to tight tolerances ask for it; dashboards run in float32.
        cache_dir: directory of JAX's persistent compilation cache; default :func:`default_cache_dir`.
        cache: turn the persistent compilation cache on (a second process then skips most compiles).

    Returns:
        A dict with the settings in force (``x64``, ``cache_dir``, ``backend``, ``devices``), handy to
        print at the top of a notebook.
    """
    jax.config.update("jax_enable_x64", bool(x64))
    directory = None
    if cache:
        directory = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        directory.mkdir(parents=True, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", str(directory))
        # Cache every compile: the dashboards' kernels are small and compile in well under a second.
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return {
        "x64": bool(jax.config.jax_enable_x64),
        "cache_dir": None if directory is None else str(directory),
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
    }
