"""SolverLab: readable, fast JAX solvers for the numerical methods behind scientific machine learning.

The core is pure JAX (jit-compiled, vmap-able, the same on CPU and GPU) and never imports a UI
library; the dashboards live in :mod:`solverlab.widgets`.
"""

import os as _os

# XLA:CPU's multi-threaded Eigen pool can wedge (every thread parked, the call never returns) on large
# while loops: seen here with jax 0.10 on 2 cores (batched samplers, the 64-D reference solve), and
# reported with the same workaround in PyAutoLabs/PyAutoFit#1530. Single-threaded Eigen costs little
# at SolverLab's sizes. Set before JAX's CPU backend starts (XLA reads XLA_FLAGS then); a user's own
# choice of the flag wins.
if "xla_cpu_multi_thread_eigen" not in _os.environ.get("XLA_FLAGS", ""):
    _os.environ["XLA_FLAGS"] = (_os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false").strip()

from . import brownian, diffusion, fractional, sde  # noqa: E402
from ._setup import default_cache_dir, setup  # noqa: E402
from .errors import SolverError  # noqa: E402

__version__ = "0.1.0"

__all__ = ["brownian", "sde", "fractional", "diffusion", "setup", "default_cache_dir", "SolverError", "__version__"]
