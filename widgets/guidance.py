r"""Dashboard for chapter 08: the guidance scale and the number of function evaluations.

Classifier-free guidance (Ho & Salimans 2022) samples with the noise prediction

.. math::
    \hat\varepsilon_w(x, t \mid c) = \hat\varepsilon(x, t) + w\,\big(\hat\varepsilon(x, t \mid c)
        - \hat\varepsilon(x, t)\big),

the noise prediction of the tilted density :math:`p_t(x)^{1-w}\,p_t(x \mid c)^{w}` at every noise
level. Here the model is exact: a ring of ``K_RING`` anisotropic Gaussians in 2-D, one class per
component (:func:`solverlab.diffusion.gmm.ring`), under the VP linear schedule. The views:

1. ``N_SAMPLES`` samples drawn by the chosen method (probability-flow ODE, :func:`solverlab.diffusion.sample`)
   from the noise of ``key(seed)``, over the contours of the exact guided density at noise level zero,
   :math:`p(x)^{1-w} p(x \mid c)^w` (closed form on a grid, normalised there; the contours enclose
   50%, 90% and 99% of its mass), with the reference endpoints of the same noise
   (:func:`solverlab.diffusion.reference_solve`: adaptive Dormand-Prince at rtol = atol =
   ``RTOL``) joined to the samples. Guided ODE samples need not follow the contours: the guided score
   at :math:`t > 0` is not the score of the noised tilted density (the reference shows where the exact
   ODE goes);
2. a grid of digits from the class-conditional digits model (:mod:`solverlab.diffusion.digits`,
   when it is installed), sampled with the same method, NFE, steps, guidance and class;
3. the terminal error :math:`\big(\tfrac1n\sum_i \|x_0^{(i)} - x_0^{\mathrm{ref}(i)}\|^2\big)^{1/2}` against
   NFE (log-log) of every method that needs no fitted statistics, at the current :math:`w`, class and
   step schedule, on fixed noise (``key(CURVE_SEED)``); a point is flagged **unstable** when the
   samples are not finite or the error exceeds the RMS radius of the reference samples (the sampler
   throws the samples further from the truth than the data's own size).

The sliders reach the kernels as traced arguments: the guidance scale and the class live as arrays
inside the model (:class:`~solverlab.diffusion.gmm.GMMModel`, :class:`~solverlab.diffusion.digits.DigitsModel`),
the NFE is a JAX int32 scalar (one compiled sampler serves every NFE) and the seed picks the noise
outside the sampler, so no slider recompiles. The method and the step schedule are static (one
compiled sampler per pair): the warm-up compiles every method at the starting step schedule (the
error curves need them all) and the starting method's digits sampler; another step schedule, or the
digits of another method, compiles on its first use, once. ``python -m solverlab.widgets.warmup``
compiles every pair into the persistent compilation cache, which makes those first uses a fraction
of a second per method. (All the methods x 3 schedules x 2 models at start-up took minutes on a
busy 2-core machine.)

What a move does not change is cached: the density and contours depend on :math:`w` and the class
only, the references on :math:`w`, the class and the seed, and the curves on :math:`w`, the class
and the step schedule. An NFE or method move runs one sampler call of ``N_SAMPLES`` points (and the
16 digits); a seed move adds one reference solve; a new :math:`w` or class reruns the curves, one
sampler call per method and NFE of ``NFE_GRID`` (about half a second on 2 busy cores; moving back
to a value seen before is instant).
"""

from __future__ import annotations

import functools
import importlib.util

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import panel as pn
import param
from bokeh.models import LinearColorMapper
from bokeh.palettes import Category10_10, Dark2_8, Greys256
from bokeh.plotting import figure
from bokeh.plotting.contour import contour_data

from solverlab import SolverError
from solverlab.diffusion import gmm as gmm_module
from solverlab.diffusion import reference_solve, samplers
from solverlab.diffusion.samplers import METHODS, sample
from solverlab.diffusion.schedules import TIMESTEP_KINDS, VPLinear

from ._base import Dashboard

__all__ = [
    "GuidanceDashboard",
    "guidance_methods",
    "sample_kernel",
    "reference_kernel",
    "density_kernel",
    "noise_kernel",
    "digits_kernel",
    "warm_up_kernels",
    "reference",
    "density",
    "curves",
    "clear_caches",
]

#: The noise schedule and the data: a ring of K_RING Gaussians in 2-D, class k = component k.
SCHEDULE = VPLinear()
K_RING = 10
MIXTURE = gmm_module.ring(K=K_RING)
#: Samples shown (and per point of the error curves).
N_SAMPLES = 256
#: The curves' noise is key(CURVE_SEED), outside the seed slider's range: fixed for every move.
CURVE_SEED = 10_000
SEED_MAX = 999
#: NFE values of the error curves.
NFE_GRID = np.array([3, 4, 5, 6, 8, 10, 12, 15, 20, 30, 50], np.int32)
NFE_RANGE = (3, 50)
W_MAX = 15.0
#: Reference tolerance (float32; its error, about 1e-5, sits below every curve point shown).
RTOL = 1e-5
#: Density grid: GRID x GRID points on [-EXTENT, EXTENT]^2; contours enclosing these masses.
EXTENT = 7.0
GRID = 100
MASSES = (0.5, 0.9, 0.99)
#: The error plot's vertical range: errors are clipped into it, non-finite ones drawn at the top.
ERROR_FLOOR, ERROR_CAP = 1e-4, 1e4
STEP_LABELS = {"logSNR": "uniform in log-SNR λ", "time": "uniform in t", "karras": "Karras (EDM, ρ = 7)"}

_AXIS = np.linspace(-EXTENT, EXTENT, GRID)
_FIGURE = dict(tools="", toolbar_location=None)
_DARK_ON_WHITE = tuple(reversed(Greys256))  # Greys256 runs black to white: 0 white, 1 black


def guidance_methods() -> tuple[str, ...]:
    """The sampler names of :data:`solverlab.diffusion.METHODS` that need no fitted statistics."""
    return tuple(m for m in METHODS if samplers.fitted_type(m) is None)


_PALETTE = Category10_10 + Dark2_8  # 18 distinct colours


def _colors() -> dict[str, str]:
    """One colour per method, fixed by its place in :func:`guidance_methods` (18 colours, then repeated)."""
    return {m: _PALETTE[i % len(_PALETTE)] for i, m in enumerate(guidance_methods())}


# -- kernels ------------------------------------------------------------------------------------------
@functools.partial(jax.jit, static_argnames=("schedule", "method", "steps"))
def sample_kernel(model, x_T, nfe, *, schedule, method: str, steps: str):
    """:func:`solverlab.diffusion.sample` of ``model`` from ``x_T`` (n, d) with a traced int32 ``nfe``
    (no finiteness check: the caller flags non-finite samples)."""
    return sample(model, x_T, schedule, method, nfe, steps=steps, check=False)


@jax.jit
def reference_kernel(model, x_T):
    """The reference endpoints of ``x_T`` (adaptive Dormand-Prince 5(4), rtol = atol = ``RTOL``)."""
    return reference_solve(model, x_T, SCHEDULE, rtol=RTOL, atol=RTOL, check=False)


@functools.partial(jax.jit, static_argnames=("shape", "stream"))
def noise_kernel(seed, sigma, *, shape: tuple[int, ...], stream: int = 0):
    r"""Starting noise :math:`x_T \sim \mathcal N(0, \sigma^2 I)` of shape ``shape`` from
    ``fold_in(key(seed), stream)`` (stream 0: the ring's samples, 1: the digits)."""
    return sigma * jax.random.normal(jax.random.fold_in(jax.random.key(seed), stream), shape)


@jax.jit
def density_kernel(mixture, label, w):
    r""":math:`(1 - w)\log p(x) + w \log p(x \mid c)` on the GRID x GRID grid (rows: y, columns: x)."""
    X, Y = jnp.meshgrid(jnp.asarray(_AXIS, mixture.means.dtype), jnp.asarray(_AXIS, mixture.means.dtype))
    points = jnp.stack([X, Y], axis=-1)
    return (1.0 - w) * mixture.log_prob(points) + w * mixture.log_prob(points, label=label)


def _model(w: float, label: int):
    return gmm_module.model_fn(MIXTURE, SCHEDULE, int(label), np.float32(w))


@functools.lru_cache(maxsize=1024)
def _noise(seed: int) -> jax.Array:
    """The ring samples' noise at ``SCHEDULE.t_max``, (N_SAMPLES, 2)."""
    return noise_kernel(np.int32(seed), np.float32(SCHEDULE.sigma(SCHEDULE.t_max)), shape=(N_SAMPLES, MIXTURE.dim))


@functools.cache
def warm_up_kernels(methods: tuple[str, ...] | None = None, steps: tuple[str, ...] = TIMESTEP_KINDS,
                    digits_methods: tuple[str, ...] | None = None) -> None:
    """Compile the ring's sampler for ``methods`` (default: :func:`guidance_methods`) with each step
    schedule of ``steps`` (the error curves need every method), the reference, the density, and the
    digits sampler for ``digits_methods`` (default: all of ``methods``) with each of ``steps``.

    A combination left out compiles on its first use, once (from the persistent compilation cache
    when ``python -m solverlab.widgets.warmup`` has filled it: a fraction of a second per method).
    """
    methods = guidance_methods() if methods is None else methods
    model, x_T = _model(1.0, 0), _noise(0)
    outs = [sample_kernel(model, x_T, jnp.asarray(NFE_RANGE[0], jnp.int32), schedule=SCHEDULE, method=m, steps=s)
            for m in methods for s in steps]
    outs.append(reference_kernel(model, x_T).x0)
    outs.append(density_kernel(MIXTURE, np.int32(0), np.float32(1.0)))
    jax.block_until_ready(outs)
    if digits_available():
        _warm_up_digits(methods if digits_methods is None else digits_methods, steps)


# -- cached pieces: what a move does not change ---------------------------------------------------------
@functools.lru_cache(maxsize=256)
def reference(w: float, label: int, seed: int) -> dict:
    """Reference endpoints of the noise of ``key(seed)`` under guidance ``w`` towards class ``label``.

    Raises :class:`~solverlab.SolverError` when the adaptive solve fails.
    """
    out = jax.device_get(reference_kernel(_model(w, label), _noise(seed)))
    if not bool(out.success) or not np.all(np.isfinite(out.x0)):
        raise SolverError(f"the reference solve failed at w = {w:g} (max steps or NaN); lower the guidance scale")
    x0 = np.asarray(out.x0)
    return {"x0": x0, "n_steps": int(out.n_steps), "nfe": int(out.nfe),
            "radius": float(np.sqrt(np.mean(np.sum(x0.astype(np.float64) ** 2, axis=-1)))),
            "columns": {"x": x0[:, 0], "y": x0[:, 1]}}


def _hdr_levels(density: np.ndarray, masses=MASSES) -> np.ndarray:
    """Density levels whose super-level sets hold ``masses`` of the (grid-normalised) density."""
    flat = np.sort(density.ravel())[::-1]
    cumulative = np.cumsum(flat) / flat.sum()
    idx = np.minimum(np.searchsorted(cumulative, masses), flat.size - 1)
    return np.unique(flat[idx])  # increasing, distinct (contour levels must be)


@functools.lru_cache(maxsize=128)
def density(w: float, label: int) -> dict:
    """The guided density on the grid (``image``, normalised to peak 1) and its mass contours.

    Only the contours are drawn: shading the density too cost about 5% more latency per w or class
    move in the browser (``benchmarks/latency.py``) and showed nothing the contours do not."""
    log_d = np.asarray(density_kernel(MIXTURE, np.int32(label), np.float32(w)), np.float64)
    d = np.exp(log_d - log_d.max()).astype(np.float32)  # float32 as drawn: the levels are values of it
    levels = _hdr_levels(d.astype(np.float64))
    lines = contour_data(_AXIS, _AXIS, d, levels, want_fill=False).line_data
    return {
        "image": {"image": [d], "x": [-EXTENT], "y": [-EXTENT],
                  "dw": [2 * EXTENT], "dh": [2 * EXTENT]},
        "contours": {"xs": [np.asarray(x, np.float32) for x in lines.xs],
                     "ys": [np.asarray(y, np.float32) for y in lines.ys],
                     "level": [float(v) for v in lines.levels]},
    }


def _terminal_error(x0: np.ndarray, ref: np.ndarray) -> float:
    """RMS distance to the reference endpoints; NaN when any sample is not finite."""
    if not np.all(np.isfinite(x0)):
        return float("nan")
    return float(np.sqrt(np.mean(np.sum((x0.astype(np.float64) - ref) ** 2, axis=-1))))


@functools.lru_cache(maxsize=128)
def curves(w: float, label: int, steps: str, methods: tuple[str, ...]) -> dict:
    """Terminal error of ``methods`` at every NFE of ``NFE_GRID`` (fixed noise ``key(CURVE_SEED)``).

    Returns ``errors`` {method: (len(NFE_GRID),) with NaN where the samples are not finite},
    ``threshold`` (the RMS radius of the reference samples) and ``unstable`` {method: bool mask}.
    """
    model, x_T = _model(w, label), _noise(CURVE_SEED)
    ref = reference(w, label, CURVE_SEED)
    # Dispatch everything first (asynchronous), then fetch once: Python overhead overlaps the compute.
    pending = {m: [sample_kernel(model, x_T, jnp.asarray(n, jnp.int32), schedule=SCHEDULE, method=m, steps=steps)
                   for n in NFE_GRID] for m in methods}
    fetched = jax.device_get(pending)  # (a dict comes back with its keys sorted: keep the methods' order)
    errors = {m: np.array([_terminal_error(x, ref["x0"]) for x in fetched[m]]) for m in methods}
    threshold = ref["radius"]
    unstable = {m: ~np.isfinite(e) | (e > threshold) for m, e in errors.items()}
    return {"errors": errors, "threshold": threshold, "unstable": unstable}


def clear_caches() -> None:
    """Forget the cached references, densities and error curves (as a new process would have them)."""
    for cached in (reference, density, curves, curve_columns):
        cached.cache_clear()


def _ranges(nfes: np.ndarray) -> str:
    """NFE values as compact ranges: [3, 4, 5, 8] -> "3-5, 8" (over NFE_GRID's order)."""
    groups, idx = [], [int(np.flatnonzero(NFE_GRID == n)[0]) for n in nfes]
    for i, n in zip(idx, nfes):
        if groups and i == groups[-1][2] + 1:
            groups[-1][1], groups[-1][2] = int(n), i
        else:
            groups.append([int(n), int(n), i])
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b, _ in groups)


def instability_note(cur: dict, w: float) -> str:
    """One line naming the methods and NFE values flagged unstable (empty when none)."""
    parts = [f"{m} at NFE {_ranges(NFE_GRID[mask])}" for m, mask in cur["unstable"].items() if mask.any()]
    if not parts:
        return ""
    return (f"**Unstable at w = {w:g}** (NaN, or error above the data's RMS radius "
            f"{cur['threshold']:.2f}): " + "; ".join(parts) + ".")


@functools.lru_cache(maxsize=128)
def curve_columns(w: float, label: int, steps: str, methods: tuple[str, ...]) -> dict:
    """The plot columns of :func:`curves` (cached: the same objects while w, class and steps stay)."""
    return _curve_columns(curves(w, label, steps, methods))


def _curve_columns(cur: dict) -> dict:
    colors = _colors()
    lines = {"xs": [], "ys": [], "color": [], "label": []}
    points = {"nfe": [], "error": [], "color": []}
    bad = {"nfe": [], "error": [], "color": []}
    for m, errors in cur["errors"].items():
        shown = np.clip(np.where(np.isfinite(errors), errors, ERROR_CAP), ERROR_FLOOR, ERROR_CAP)
        mask = cur["unstable"][m]
        lines["xs"].append(NFE_GRID.astype(np.float32))
        lines["ys"].append(shown.astype(np.float32))
        lines["color"].append(colors[m])
        lines["label"].append(f"{m}: unstable at NFE {_ranges(NFE_GRID[mask])}" if mask.any() else m)
        for target, keep in ((points, ~mask), (bad, mask)):
            target["nfe"].extend(NFE_GRID[keep].tolist())
            target["error"].extend(shown[keep].tolist())
            target["color"].extend([colors[m]] * int(keep.sum()))
    return {"curves": lines, "curve_points": points, "unstable_points": bad, "threshold": {"error": [cur["threshold"]]}}


def class_fraction(x: np.ndarray, label: int) -> float:
    """Fraction of the finite samples ``x`` (n, 2) whose most probable ring component is ``label``."""
    x = x[np.all(np.isfinite(x), axis=-1)]
    if len(x) == 0:
        return float("nan")
    owner = _owner(x)
    return float(np.mean(owner == label))


@functools.cache
def _mixture_numpy():
    """The ring's means, precisions and log weights plus log-determinant terms, in float64 NumPy."""
    means, covs, weights = (np.asarray(a, np.float64) for a in (MIXTURE.means, MIXTURE.covs, MIXTURE.weights))
    return means, np.linalg.inv(covs), np.log(weights) - 0.5 * np.linalg.slogdet(covs)[1]


def _owner(x: np.ndarray) -> np.ndarray:
    """Most probable component of each point (log weight + Gaussian log density), in NumPy."""
    means, prec, offset = _mixture_numpy()
    r = x[:, None, :] - means[None]  # (n, K, d)
    return np.argmax(offset - 0.5 * np.einsum("nki,kij,nkj->nk", r, prec, r), axis=-1)


# -- the digits model (chapter 08's trained network), when its module is there -------------------------
DIGITS_SHOWN = 16  # a 4 x 4 grid


def digits_available() -> bool:
    """Whether :mod:`solverlab.diffusion.digits` (the trained digits model) is installed."""
    return importlib.util.find_spec("solverlab.diffusion.digits") is not None


@functools.cache
def _digits():
    """The digits module, its trained denoiser's arrays and (separately) the rest of its structure,
    and the digit classifier."""
    from solverlab.diffusion import digits

    denoiser, classifier = digits.load_pretrained()
    arrays, static = eqx.partition(denoiser, eqx.is_array)
    return digits, arrays, static, classifier


@functools.partial(jax.jit, static_argnames=("method", "steps"))
def digits_kernel(arrays, classifier, label, w, x_T, nfe, *, method: str, steps: str):
    """The digits model's guided samples from ``x_T`` (n, 64), as :func:`sample_kernel` (the network's
    arrays, the label and the guidance traced; its activation functions closed over), and the class
    the digit classifier reads in each."""
    digits, _, static, _ = _digits()
    model = digits.DigitsModel(eqx.combine(arrays, static), label, w)
    x0 = sample(model, x_T, digits.SCHEDULE, method, nfe, steps=steps, check=False)
    return x0, jnp.argmax(classifier.logits(x0), axis=-1)


def _digits_noise(seed: int) -> jax.Array:
    """The digits' noise at the digits schedule's ``t_max``, (DIGITS_SHOWN, 64)."""
    digits = _digits()[0]
    sigma = np.float32(digits.SCHEDULE.sigma(digits.SCHEDULE.t_max))
    return noise_kernel(np.int32(seed), sigma, shape=(DIGITS_SHOWN, digits.DIM), stream=1)


def _warm_up_digits(methods, steps) -> None:
    _, arrays, _, classifier = _digits()
    x_T = _digits_noise(0)
    jax.block_until_ready([
        digits_kernel(arrays, classifier, np.int32(0), np.float32(1.0), x_T, jnp.asarray(NFE_RANGE[0], jnp.int32), method=m, steps=s)
        for m in methods for s in steps])


def digit_mosaic(images: np.ndarray, gap: int = 1) -> np.ndarray:
    """Tile (n, 8, 8) images into one square mosaic (rows top to bottom), NaN in the gaps."""
    n = images.shape[0]
    side = int(np.ceil(np.sqrt(n)))
    size = images.shape[1]
    cell = size + gap
    mosaic = np.full((side * cell - gap, side * cell - gap), np.nan, np.float32)
    for i, img in enumerate(images):
        r, c = divmod(i, side)
        mosaic[r * cell: r * cell + size, c * cell: c * cell + size] = img
    return mosaic[::-1]  # Bokeh's image rows run bottom to top


def digits_grid(w: float, label: int, seed: int, nfe: int, method: str, steps: str):
    """``DIGITS_SHOWN`` digits of class ``label`` sampled like the ring's samples: an image column,
    whether every digit is finite, and how many of them the digit classifier reads as ``label``."""
    _, arrays, _, classifier = _digits()
    x0, predicted = jax.device_get(digits_kernel(arrays, classifier, np.int32(label), np.float32(w),
                                                 _digits_noise(seed), jnp.asarray(nfe, jnp.int32),
                                                 method=method, steps=steps))
    x0 = np.asarray(x0)
    finite = np.all(np.isfinite(x0), axis=-1)
    recognised = int(np.sum((np.asarray(predicted) == label) & finite))
    # digits.to_images in NumPy (no device round trip): pixels (x + 1)/2 clipped to [0, 1]; NaN stays NaN.
    images = np.clip((x0.reshape(-1, 8, 8) + 1.0) / 2.0, 0.0, 1.0)
    mosaic = digit_mosaic(images)
    columns = {"image": [mosaic], "x": [0.0], "y": [0.0], "dw": [float(mosaic.shape[1])],
               "dh": [float(mosaic.shape[0])]}
    return columns, bool(finite.all()), recognised


# -- the dashboard ---------------------------------------------------------------------------------------
class GuidanceDashboard(Dashboard):
    """Classifier-free guidance: samples over the guided density, digits, error against NFE."""

    title = "Guidance scale and NFE"
    description = (
        "Classifier-free guidance mixes the unconditional and the class-conditional noise predictions, "
        "ε + w (ε(·|c) − ε): **w** = 0 is the unconditional model, w = 1 the conditional one, larger w "
        "pushes towards the class and away from the others. The ring's score is exact, so every error "
        "here is the sampler's. Left: samples of the chosen **method** with **NFE** model evaluations "
        "(dots) joined to the reference endpoints of the same noise (grey circles: an adaptive "
        "Dormand-Prince solve of the same guided ODE), over the contours of p(x)^(1−w) p(x|c)^w holding "
        "50/90/99% of its mass. Below: the terminal error of every method against NFE at this w; red "
        "crosses mark unstable runs (NaN, or an error larger than the data's own radius). Large w makes "
        "the ODE stiff: the singlestep high-order solvers and Heun break first, and more steps or "
        "multistep data prediction (DPM-Solver++, UniPC) recover. Right: digits from the trained "
        "class-conditional model, sampled the same way. The methods are every sampler that needs no "
        "fitted statistics. A step schedule (or a method's digits) used for the first time compiles "
        "once: a moment's wait."
    )
    kernels = (sample_kernel, reference_kernel, density_kernel, noise_kernel, digits_kernel)
    widgets = {
        "w": {"type": pn.widgets.FloatSlider, "step": 0.25, "format": "0.00"},
        "nfe": {"type": pn.widgets.IntSlider},
        "method": {"type": pn.widgets.Select},
        "steps": {"type": pn.widgets.Select},
        "label": {"type": pn.widgets.IntSlider},
        "seed": {"type": pn.widgets.IntSlider},
    }

    w = param.Number(3.0, bounds=(0.0, W_MAX), step=0.25, label="guidance scale w",
                     doc="0: unconditional, 1: conditional, > 1: guided beyond the class.")
    nfe = param.Integer(10, bounds=NFE_RANGE, label="NFE", doc="Model evaluations, the final step to noise zero included.")
    method = param.Selector(default="dpm_solver++_2m", objects=list(guidance_methods()), label="method",
                            doc="The sampler of the probability-flow ODE.")
    steps = param.Selector(default="logSNR", objects=list(TIMESTEP_KINDS), label="step schedule",
                           doc="Where the steps go: uniform in log-SNR, in t, or the Karras (EDM) rule.")
    label = param.Integer(0, bounds=(0, K_RING - 1), label="class c", doc="The class guided towards.")
    seed = param.Integer(0, bounds=(0, SEED_MAX), label="seed", doc="The samples' noise is key(seed).")

    def __init__(self, methods=None, **params):
        """``methods``: the samplers offered and drawn in the error plot (default: every method of
        :func:`guidance_methods`); fewer methods compile faster and draw a plainer plot."""
        available = guidance_methods()
        methods = available if methods is None else tuple(methods)
        unknown = [m for m in methods if m not in available]
        if not methods or unknown:
            raise ValueError(f"methods must be a non-empty selection of {', '.join(available)}, got {methods!r}")
        self.methods = methods  # read by warm_up(), which runs inside Dashboard.__init__
        super().__init__(**params)
        if self.data["problem"]:
            self.show_error(self.data["problem"])

    def controls(self) -> list[str]:
        return ["w", "nfe", "method", "steps", "label", "seed"]

    def warm_up(self) -> None:
        self.param.method.objects = list(self.methods)
        if self.method not in self.methods:
            self.method = self.methods[0]
        # What the first page draws: every method's curve at this step schedule, this method's digits.
        # Another step schedule (or the digits of another method) compiles on its first use, once.
        warm_up_kernels(self.methods, (self.steps,), (self.method,))

    def compute(self) -> dict:
        # Fixed types: the browser sends integral-looking values as ints.
        w, label, seed, nfe = float(np.float32(self.w)), int(self.label), int(self.seed), int(self.nfe)
        method, steps = self.method, self.steps
        if method not in self.methods:
            raise ValueError(f"method must be one of {', '.join(self.methods)}, got {method!r}")
        ref = reference(w, label, seed)
        x0 = np.asarray(jax.device_get(sample_kernel(_model(w, label), _noise(seed), jnp.asarray(nfe, jnp.int32),
                                                     schedule=SCHEDULE, method=method, steps=steps)))
        finite = np.all(np.isfinite(x0), axis=-1)
        error = _terminal_error(x0, ref["x0"])
        cur = curves(w, label, steps, self.methods)
        problem = ""
        if not finite.all():
            problem = (f"{method} with NFE = {nfe} at w = {w:g} produced NaN or infinite samples "
                       f"({int((~finite).sum())} of {N_SAMPLES}); try more steps, a lower guidance scale or "
                       "DPM-Solver++.")
        data = {
            **density(w, label),
            "samples": {"x": x0[finite, 0], "y": x0[finite, 1],
                        "rx": ref["x0"][finite, 0], "ry": ref["x0"][finite, 1]},
            "reference": ref["columns"],
            **curve_columns(w, label, steps, self.methods),
            "current": {"nfe": [nfe], "error": [float(np.clip(error if np.isfinite(error) else ERROR_CAP,
                                                              ERROR_FLOOR, ERROR_CAP))],
                        "color": [_colors()[method]]},
            "problem": problem,
        }
        data["summary"] = self._summary(w, label, nfe, method, steps, ref, x0, error, cur)
        if digits_available():
            data["digits"], digits_finite, recognised = digits_grid(w, label, seed, nfe, method, steps)
            data["summary"] += (f"  \nDigits: the digit classifier reads **{recognised} of {DIGITS_SHOWN}** "
                                f"as a {label}.")
            if not digits_finite:
                data["summary"] += " Some digits came out NaN (drawn blank): the sampler diverged on the network too."
        return data

    def _summary(self, w, label, nfe, method, steps, ref, x0, error, cur) -> str:
        outside = int(np.sum(np.any(np.abs(x0) > EXTENT, axis=-1) & np.all(np.isfinite(x0), axis=-1)))
        err = "NaN (samples not finite)" if not np.isfinite(error) else f"{error:.3g}"
        radius = ref["radius"]
        if not np.isfinite(error) or error > radius:
            err += f" — **this run is unstable** (error above the data's RMS radius {radius:.2f})"
        text = (
            f"**w = {w:g}, class {label}; {method}, NFE = {nfe}, steps {STEP_LABELS[steps]}.**  \n"
            f"Terminal error against the reference (RMS over {N_SAMPLES} samples): **{err}**. Reference: "
            f"adaptive Dormand-Prince, rtol = atol = {RTOL:g}, {ref['n_steps']} steps, {ref['nfe']} evaluations.  \n"
            f"In class {label}'s component: samples **{class_fraction(x0, label):.0%}**, "
            f"reference {class_fraction(ref['x0'], label):.0%}."
        )
        if outside:
            text += f" {outside} samples lie outside the plotted square."
        note = instability_note(cur, w)
        return text + (f"  \n{note}" if note else f"  \nNo method is unstable at w = {w:g} on NFE {NFE_GRID[0]}-{NFE_GRID[-1]}.")

    def views(self) -> list:
        names = ["contours", "samples", "reference", "curves", "curve_points", "unstable_points", "current",
                 "threshold"]
        src = {name: self.source(name) for name in names}
        top = [_samples_figure(src)]
        if "digits" in self.data:
            top.append(_digits_figure(self.source("digits")))
        else:
            top.append(pn.pane.Markdown("*The digits grid appears once `solverlab.diffusion.digits` is installed.*",
                                        width=300))
        return [pn.Row(*top), self.text("summary", width=860), _error_figure(src)]


def _figure(title: str, **kwargs):
    fig = figure(title=title, **{**_FIGURE, **kwargs})
    fig.title.text_font_size = "12pt"
    return fig


def _samples_figure(src: dict) -> pn.pane.Bokeh:
    fig = _figure("samples (dots) → reference endpoints (○) over p(x)^(1−w) p(x|c)^w", width=560, height=540,
                  x_range=(-EXTENT, EXTENT), y_range=(-EXTENT, EXTENT), match_aspect=True)
    fig.multi_line("xs", "ys", source=src["contours"], color="#3182bd", line_width=1.2, alpha=0.9)
    fig.segment("rx", "ry", "x", "y", source=src["samples"], color="#e6550d", alpha=0.5, line_width=1)
    fig.scatter("x", "y", source=src["reference"], size=5, fill_alpha=0, line_color="#555555",
                legend_label="reference endpoint")
    fig.scatter("x", "y", source=src["samples"], size=4, color="#e6550d", legend_label="sample")
    fig.legend.location = "top_left"
    fig.legend.label_text_font_size = "9pt"
    fig.legend.background_fill_alpha = 0.7
    return pn.pane.Bokeh(fig)


def _digits_figure(source) -> pn.pane.Bokeh:
    size = float(source.data["dw"][0])
    fig = _figure("digits, same sampler", width=300, height=320, x_range=(0, size),
                  y_range=(0, size))
    fig.image("image", x="x", y="y", dw="dw", dh="dh", source=source, level="image",
              color_mapper=LinearColorMapper(palette=_DARK_ON_WHITE, low=0.0, high=1.0, nan_color="white"))
    fig.axis.visible = False
    fig.grid.visible = False
    return pn.pane.Bokeh(fig)


def _error_figure(src: dict) -> pn.pane.Bokeh:
    fig = _figure("terminal error against NFE at this w (fixed noise); × unstable, ◆ the samples above",
                  width=860, height=400, x_axis_type="log", y_axis_type="log", x_axis_label="NFE",
                  y_axis_label="RMS distance to the reference", x_range=(2.8, 54),
                  y_range=(ERROR_FLOOR, ERROR_CAP * 1.5))
    fig.multi_line("xs", "ys", source=src["curves"], color="color", line_width=1.8, legend_field="label")
    fig.hspan(y="error", source=src["threshold"], line_color="#d62728", line_dash="dashed", line_width=1.5)
    fig.scatter("nfe", "error", source=src["curve_points"], color="color", size=5)
    fig.scatter("nfe", "error", source=src["unstable_points"], color="#d62728", marker="x", size=11, line_width=2)
    fig.scatter("nfe", "error", source=src["current"], color="color", marker="diamond", size=14, line_color="black")
    fig.xaxis.ticker = [int(n) for n in NFE_GRID]
    legend = fig.legend[0]  # beside the plot: the curves fill it
    legend.label_text_font_size = "9pt"
    legend.spacing = 0
    legend.padding = 2
    legend.border_line_alpha = 0
    fig.add_layout(legend, "right")
    return pn.pane.Bokeh(fig)
