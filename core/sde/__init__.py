"""SDE solvers on the Brownian tree: constant and adaptive steps (chapter 02).

Kidger, "On Neural Differential Equations" (2022); Jelincic, Foster & Kidger (2024).
"""

from ._sde import CALCULI, NOISE_TYPES, SDE
from ._convergence import Convergence, fit_order, strong_convergence, weak_convergence
from ._solve import (
    RESULTS,
    AbstractController,
    PIController,
    Solution,
    StateRuleController,
    solve,
)
from ._solver import AbstractSolver, EulerMaruyama, Heun, Milstein, ShARK
from ._solver import DriftImplicitEulerCIR, HOStS
from . import cir

__all__ = [
    "SDE",
    "NOISE_TYPES",
    "CALCULI",
    "solve",
    "Solution",
    "AbstractController",
    "PIController",
    "StateRuleController",
    "RESULTS",
    "strong_convergence",
    "weak_convergence",
    "fit_order",
    "Convergence",
    "AbstractSolver",
    "EulerMaruyama",
    "Milstein",
    "Heun",
    "ShARK",
    "DriftImplicitEulerCIR",
    "HOStS",
    "cir",
]
