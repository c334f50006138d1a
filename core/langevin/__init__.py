"""Langevin dynamics for sampling (chapter 04): overdamped (ULA, MALA) and kinetic (underdamped) solvers.

Roberts & Tweedie (1996) for ULA/MALA; Leimkuhler & Matthews (2013) for BAOAB; Foster, Lyons &
Oberhauser (2021) for ALIGN and ShOULD; Jelincic, Foster & Kidger (2024) for solving on the
Virtual Brownian Tree with W, H and K.
"""

from ._checks import Samples, rhat
from .kinetic import (
    ALIGN,
    BAOAB,
    OBABO,
    SOLVERS,
    KineticEuler,
    KineticPath,
    KineticSolver,
    ShOULD,
    kinetic_langevin,
    kinetic_solve,
)
from .overdamped import mala, ula

__all__ = [
    "ula",
    "mala",
    "kinetic_langevin",
    "kinetic_solve",
    "Samples",
    "KineticPath",
    "KineticSolver",
    "KineticEuler",
    "BAOAB",
    "OBABO",
    "ALIGN",
    "ShOULD",
    "SOLVERS",
    "rhat",
]
