"""One file per solver; see :class:`.base.AbstractSolver` for the contract."""

from .base import AbstractSolver
from .euler_maruyama import EulerMaruyama
from .heun import Heun
from .milstein import Milstein
from .shark import ShARK
from .cir import DriftImplicitEulerCIR, HOStS

__all__ = ["AbstractSolver", "EulerMaruyama", "Milstein", "Heun", "ShARK", "DriftImplicitEulerCIR", "HOStS"]
