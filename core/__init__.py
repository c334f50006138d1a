"""SolverLab: readable, fast JAX solvers for the numerical methods behind scientific machine learning.

The core is pure JAX (jit-compiled, vmap-able, the same on CPU and GPU) and never imports a UI
library; the dashboards live in :mod:`solverlab.widgets`.
"""

from . import brownian, diffusion, fluids, fractional, langevin, sde
from ._setup import default_cache_dir, setup
from .errors import SolverError

__version__ = "0.1.0"

__all__ = ["brownian", "sde", "fractional", "langevin", "diffusion", "fluids", "setup", "default_cache_dir", "SolverError", "__version__"]
