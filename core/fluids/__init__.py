r"""Incompressible Navier-Stokes in two dimensions (chapter 12): the lid-driven cavity, periodic
pseudo-spectral vorticity, and flow past obstacles.

The Reynolds number :math:`Re = U L / \nu` is the one knob: every solver takes it (or the
viscosity) as a traced argument, so a dashboard that turns it never recompiles.

Modules: :mod:`.grid` (the periodic box, wavenumbers, the 2/3 rule), :mod:`.poisson` (fast
Poisson solves by sine and cosine transforms), :mod:`.lid_driven` (the cavity, against
:mod:`.ghia`), :mod:`.periodic` and :mod:`.diagnostics` (pseudo-spectral vorticity with ETDRK4,
Kolmogorov forcing, decaying turbulence), :mod:`.obstacles` (Brinkman penalisation, vortex shedding,
the Strouhal number) and :mod:`.dataset` (multi-difficulty data for neural PDE solvers).
"""

from . import dataset, diagnostics, ghia, grid, lid_driven, obstacles, periodic, poisson
from .grid import PeriodicGrid
from .lid_driven import CavityResult, cavity, cavity_advance, cavity_init
from .obstacles import Cylinder, Rectangle, simulate_obstacle_flow, strouhal
from .periodic import advance, simulate

__all__ = [
    "grid", "poisson", "lid_driven", "ghia", "periodic", "diagnostics", "obstacles", "dataset",
    "PeriodicGrid", "cavity", "cavity_init", "cavity_advance", "CavityResult",
    "advance", "simulate", "Cylinder", "Rectangle", "simulate_obstacle_flow", "strouhal",
]
