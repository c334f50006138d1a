r"""Diffusion models as differential equations (chapters 07-08): noise schedules, exact-score
Gaussian-mixture models, and fast samplers of the probability-flow ODE.

Lu et al., "DPM-Solver" (2022) and "DPM-Solver++" (2022); Zhao et al., "UniPC" (2023) and
"DC-Solver" (2024); Liu et al., "A Unified Sampling Framework for Solver Searching" (USF, 2023); Zheng et al.,
"DPM-Solver-v3" (2023); Karras et al., "Elucidating the design
space of diffusion-based generative models" (EDM, 2022); Song et al., "Score-based generative
modeling through SDEs" (2021).
"""

from . import dc, digits, gmm, metrics, params, reference, samplers, schedules, search, unipc, v3  # register methods
from .gmm import GaussianMixture, GMMModel, model_fn, random_mixture, ring
from .params import PARAMETERISATIONS, as_noise_prediction, convert
from .reference import ReferenceSolution
from .reference import reference as reference_solve
from .dc import CascadeRatios, DCRatios, fit_cascade, fit_dc_ratios
from .search import SearchedSchedule, search_schedule
from .v3 import V3Statistics, fit_v3_statistics
from .samplers import METHODS, fitted_type, sample, sample_ancestral
from .schedules import EDM, VE, DDPMLinear, Schedule, VPCosine, VPLinear, timesteps

__all__ = [
    "gmm", "metrics", "params", "reference", "samplers", "schedules",
    "GaussianMixture", "GMMModel", "model_fn", "ring", "random_mixture",
    "reference_solve", "ReferenceSolution",
    "VPLinear", "VPCosine", "VE", "EDM", "DDPMLinear", "Schedule", "timesteps",
    "PARAMETERISATIONS", "convert", "as_noise_prediction",
    "METHODS", "fitted_type", "sample", "sample_ancestral",
    "digits", "unipc", "dc", "DCRatios", "CascadeRatios", "fit_dc_ratios", "fit_cascade",
    "search", "SearchedSchedule", "search_schedule",
    "v3", "V3Statistics", "fit_v3_statistics",
]
