r"""Diffusion models as differential equations (chapters 07-08): noise schedules, exact-score
Gaussian-mixture models, and fast samplers of the probability-flow ODE.

Lu et al., "DPM-Solver" (2022) and "DPM-Solver++" (2022); Karras et al., "Elucidating the design
space of diffusion-based generative models" (EDM, 2022); Song et al., "Score-based generative
modeling through SDEs" (2021).
"""

from . import samplers
from .samplers import METHODS, sample, step_grid

__all__ = ["samplers", "METHODS", "sample", "step_grid"]
