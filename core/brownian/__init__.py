"""Brownian motion you can query anywhere: the Virtual Brownian Tree and fixed-grid paths.

Chapter 01. Jelincic, Foster & Kidger (2024), "Single-seed generation of Brownian paths and
integrals for adaptive and high order SDE solvers".
"""

from ._bridge import bridge_mean_cov, split_increment
from ._increment import LEVY_AREAS, BrownianIncrement
from .grid import BrownianGrid, coarsen
from .tree import BrownianTree

__all__ = [
    "BrownianTree",
    "BrownianGrid",
    "BrownianIncrement",
    "coarsen",
    "bridge_mean_cov",
    "split_increment",
    "LEVY_AREAS",
]
