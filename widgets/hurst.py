r"""Dashboard for chapter 03: the Hurst index, exact fBM and its Markov approximation.

Fractional Brownian motion with Hurst index :math:`H` drawn two ways on :math:`t_j = j/N`,
:math:`N = 512`:

* exactly, by Davies-Harte circulant embedding (:func:`solverlab.fractional.exact.fbm`), the
  standard fBM with :math:`\operatorname{Var} B_t = t^{2H}`;
* as the Markov approximation (MA-fBM) of Daems, Opper, Crevecoeur & Birdal (ICLR 2024):
  :math:`\hat B_t = \sum_{k=1}^K \omega_k Y^k_t` (type I: :math:`Y^k_t - Y^k_0`), with
  :math:`K` Ornstein-Uhlenbeck processes :math:`dY^k = -\gamma_k Y^k\,dt + dW` driven by *one*
  Brownian motion with its space-time Levy area (:class:`~solverlab.brownian.BrownianGrid`), geometric speeds
  :math:`\gamma_k \in [1/\gamma_{\max}, \gamma_{\max}]` and the optimal weights
  :math:`\omega^* = A^{-1}b` (:mod:`solverlab.fractional.markov`).

The views: a few paths of each; the variance against :math:`t` on log-log axes (exact, the
approximation's closed form, and both samples: the approximation is Brownian, slope 1, below the
time scale :math:`1/\gamma_{\max}`, and flattens above :math:`\gamma_{\min}^{-1}`); the
autocorrelation of the increments against fractional Gaussian noise's
:math:`\rho(k) = \tfrac12(|k+1|^{2H} - 2|k|^{2H} + |k-1|^{2H})`; the closed-form approximation
error :math:`\int_0^1 \mathbb E(B_t - \hat B_t)^2 dt` against :math:`K`; and the Hurst index
estimated from each sample (:func:`solverlab.fractional.hurst.estimate_hurst`).

Every control reaches the kernels as a traced scalar: :math:`K` selects the first :math:`K` of
``K_SLOTS`` fixed slots (``active`` mask), and the type (I or II) is a static argument compiled for
both values at warm-up, so no control recompiles. The weights are solved in float64 (the Gram matrix
:math:`A` has condition numbers up to :math:`10^{17}`) inside ``jax.enable_x64``, and so are the
MA-fBM paths (the weights reach :math:`10^5` and cancel, and type I's stationary start has the
equally ill-conditioned covariance :math:`1/(\gamma_i + \gamma_j)`); the exact paths are float32.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import panel as pn
import param
from bokeh.plotting import figure

from solverlab import SolverError
from solverlab.brownian import BrownianGrid
from solverlab.fractional import markov
from solverlab.fractional.exact import fbm
from solverlab.fractional.hurst import estimate_hurst

from ._base import Dashboard

__all__ = ["HurstDashboard", "exact_kernel", "markov_kernel", "weights_kernel", "warm_up_kernels"]

#: Grid steps on [0, 1]; paths per sample (statistics), of which N_SHOWN are drawn.
N = 512
N_PATHS = 16
N_SHOWN = 4
#: Fixed number of OU slots: the K slider activates the first K.
K_SLOTS = 20
#: Lags of the increment autocorrelation.
LAGS = 24
#: gamma_max choices (log-spaced): a discrete slider.
GAMMA_MAX = (2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0)
KINDS = {"I (Mandelbrot-van Ness)": "I", "II (Riemann-Liouville)": "II"}
#: Relative errors below this are float64 rounding: drawn at this floor.
ROUNDING = 1e-16

_T = np.linspace(0.0, 1.0, N + 1)
#: Times at which the variance is drawn: log-spaced grid points 1/N .. 1.
_VAR_IDX = np.unique(np.geomspace(1, N, 40).round().astype(np.int32))
_LAG = np.arange(LAGS + 1)
_FIGURE = dict(height=260, tools="", toolbar_location=None)
_COLORS = ("#3182bd", "#e6550d", "#31a354", "#756bb1")


def _sample_statistics(paths):
    r"""Variance at ``_VAR_IDX``, autocorrelation of the increments and the pooled Hurst estimate.

    ``paths``: (N_PATHS, N + 1) starting at 0. The increments have mean 0, so the moments are taken
    about 0; the pooled estimate averages the per-path estimates, its standard error is
    :math:`\sqrt{\sum_i \mathrm{se}_i^2}/M`.
    """
    dx = jnp.diff(paths, axis=-1)
    gamma0 = jnp.mean(dx * dx)
    acf = jnp.stack([jnp.mean(dx[:, k:] * dx[:, : N - k]) for k in range(LAGS + 1)]) / gamma0
    estimate = estimate_hurst(paths)
    return {
        "variance": jnp.mean(paths[:, _VAR_IDX] ** 2, axis=0),
        "acf": acf,
        "hurst": jnp.mean(estimate.hurst),
        "stderr": jnp.sqrt(jnp.sum(estimate.stderr**2)) / paths.shape[0],
    }


@jax.jit
def exact_kernel(seed, hurst):
    """``N_PATHS`` exact fBM paths (Davies-Harte) from ``key(seed)`` and their statistics."""
    paths = fbm(jax.random.key(seed), N, hurst, batch_shape=(N_PATHS,))
    return {"paths": paths[:N_SHOWN], **_sample_statistics(paths)}


@functools.partial(jax.jit, static_argnames="kind")
def weights_kernel(hurst, K, gamma_max, *, kind: str):
    r"""Speeds, optimal weights (first ``K`` slots), closed-form variances and errors for every K.

    Call inside ``jax.enable_x64(True)`` with float64 arguments. Returns the error
    :math:`\mathcal E(K')` for :math:`K' = 1..K_{\text{SLOTS}}` at this :math:`\gamma_{\max}`, the
    squared norm :math:`c = \int_0^1 \mathbb E B_t^2\,dt` it is relative to, and the variances on
    ``_T[_VAR_IDX]``.
    """
    gammas = markov.speeds(K, gamma_max, slots=K_SLOTS)
    active = markov.active_mask(K, K_SLOTS)
    weights = markov.optimal_weights(hurst, gammas, 1.0, kind, active)

    def error(k):
        mask = markov.active_mask(k, K_SLOTS)
        return markov.approximation_error(hurst, markov.speeds(k, gamma_max, slots=K_SLOTS), None, 1.0,
                                          kind, mask)

    t = jnp.asarray(_T[_VAR_IDX])
    return {
        "gammas": gammas,
        "weights": weights,
        "errors": jax.vmap(error)(jnp.arange(1, K_SLOTS + 1)),
        "norm": markov.objective_terms(hurst, gammas[:1], 1.0, kind)[2],
        "exact_variance": markov.exact_variance(t, hurst, kind),
        "ma_variance": markov.ma_variance(t, hurst, gammas, weights, kind, 1.0, active),
    }


@functools.partial(jax.jit, static_argnames="kind")
def markov_kernel(seed, hurst, gammas, weights, *, kind: str):
    """``N_PATHS`` MA-fBM paths driven by one Brownian motion each, and their statistics.

    The Brownian increments and space-time Levy areas over the grid come from a
    :class:`~solverlab.brownian.BrownianGrid`: on a fixed grid it draws the same law as a tree
    whose leaves are the grid steps, at a third of the cost (chapter 03 shows the tree version,
    queried anywhere). Type I draws the stationary start of the OU processes from a second key.
    """
    key_path, key_start = jax.random.split(jax.random.key(seed))
    zero = jnp.zeros((), jnp.result_type(hurst))
    increments = BrownianGrid(zero, zero + 1.0, N, (N_PATHS,), key_path, levy_area="space-time").increments()
    steps = jnp.full(N, 1.0 / N, zero.dtype)
    values = markov.ma_fbm_from_increments(increments, steps, hurst, gammas, weights, kind, key=key_start)
    paths = jnp.concatenate([jnp.zeros((N_PATHS, 1), values.dtype), values.T], axis=1)  # (N_PATHS, N + 1)
    return {"paths": paths[:N_SHOWN], **_sample_statistics(paths)}


@functools.lru_cache(maxsize=64)  # a seed move reuses them
def _weights(hurst: float, K: int, gamma_max: float, kind: str) -> dict:
    with jax.enable_x64(True):
        out = weights_kernel(np.float64(hurst), np.int32(K), np.float64(gamma_max), kind=kind)
        return jax.device_get(out)


def _markov_paths(seed: int, hurst: float, w: dict, kind: str) -> dict:
    # float64: the weights reach 1e5 and cancel, and type I's stationary start has the Cauchy
    # covariance 1/(g_i + g_j) (condition numbers up to 1e17); in float32 the sum is rounding noise.
    with jax.enable_x64(True):
        out = markov_kernel(np.int32(seed), np.float64(hurst), w["gammas"], w["weights"], kind=kind)
        return jax.device_get(out)


@functools.cache
def warm_up_kernels() -> None:
    """Compile every kernel for both types, once per process."""
    jax.block_until_ready(exact_kernel(np.int32(0), np.float32(0.3)))
    for kind in KINDS.values():
        _markov_paths(0, 0.3, _weights(0.3, 5, 100.0, kind), kind)


def _fgn_correlation(hurst: float) -> np.ndarray:
    """Fractional Gaussian noise's autocorrelation at ``_LAG`` (Mandelbrot & Van Ness 1968)."""
    k = _LAG.astype(float)
    return 0.5 * (np.abs(k + 1) ** (2 * hurst) - 2 * k ** (2 * hurst) + np.abs(k - 1) ** (2 * hurst))


def _float32_columns(outputs: dict) -> dict:
    """Plot columns as float32: half the bytes to the browser, and more digits than a plot shows."""
    def cast(column):
        column = np.asarray(column)
        return column.astype(np.float32) if column.dtype == np.float64 else column

    return {name: {k: cast(v) for k, v in out.items()} if isinstance(out, dict) and name != "estimates" else out
            for name, out in outputs.items()}


def _check_finite(name: str, *arrays) -> None:
    if not all(np.all(np.isfinite(a)) for a in arrays):
        raise SolverError(f"the {name} came out NaN or infinite; try fewer OU terms K or another gamma_max")


def _summary(hurst, K, gamma_max, kind, w, exact, ma) -> str:
    def interval(s):
        low, high = s["hurst"] - 1.96 * s["stderr"], s["hurst"] + 1.96 * s["stderr"]
        return f"{s['hurst']:.3f} ± {s['stderr']:.3f} (95%: {low:.3f} .. {high:.3f})"

    gammas = w["gammas"][:K]
    error = float(w["errors"][K - 1])
    return (
        f"**Type {kind}, H = {hurst:.2f}, K = {K}** OU processes with speeds {gammas.min():.3g} .. "
        f"{gammas.max():.3g}; weights {np.array2string(w['weights'][:K], precision=3, max_line_width=200)}.  \n"
        f"Closed-form error ∫₀¹ E(B − B̂)² dt = **{error:.3e}**, {error / float(w['norm']):.2%} of "
        f"∫₀¹ E B² dt.  \n"
        f"Estimated H from {N_PATHS} paths of {N} steps: exact fBM **{interval(exact)}**, "
        f"MA-fBM **{interval(ma)}**."
    ) + _stiffness_note(gamma_max)


def _stiffness_note(gamma_max: float) -> str:
    z = gamma_max / N
    if z <= 1.0:
        return ""
    return (
        f"  \nγ_max · Δt = {z:.3g} > 1: the fastest OU processes relax within one grid step. Each "
        "step is exact in mean given W and its Levy area, but part of their variance is left out, "
        "so at small t the MA-fBM sample sits below its closed form."
    )


class HurstDashboard(Dashboard):
    """Exact fBM beside its Markov approximation by K Ornstein-Uhlenbeck processes."""

    title = "The Hurst index"
    description = (
        "**H** sets the roughness: H < 1/2 gives anti-correlated, rough increments, H > 1/2 smooth, "
        "persistent ones; H = 1/2 is Brownian motion. Left: exact fBM (Davies-Harte). Right: its Markov "
        "approximation, a weighted sum of **K** OU processes with speeds up to **gamma_max**, all driven "
        "by one Brownian motion. Below the time scale 1/gamma_max the approximation is Brownian "
        "(variance slope 1 on the log-log plot): rough H needs fast OU processes."
    )
    kernels = (exact_kernel, weights_kernel, markov_kernel)
    widgets = {
        "hurst": {"type": pn.widgets.FloatSlider, "step": 0.01, "format": "0.00"},
        "K": {"type": pn.widgets.IntSlider},
        "gamma_max": {"type": pn.widgets.DiscreteSlider},
        "kind": {"type": pn.widgets.Select},
        "seed": {"type": pn.widgets.IntSlider},
    }

    hurst = param.Number(0.3, bounds=(0.01, 0.99), step=0.01, label="Hurst index H",
                         doc="Roughness and memory of the noise, in (0, 1).")
    K = param.Integer(5, bounds=(1, K_SLOTS), label="OU terms K", doc="Number of OU processes in the approximation.")
    gamma_max = param.Selector(default=100.0, objects=list(GAMMA_MAX), label="gamma_max",
                               doc="Fastest OU speed; the slowest is 1/gamma_max.")
    kind = param.Selector(default=next(iter(KINDS)), objects=list(KINDS), label="fBM type",
                          doc="I: standard fBM, stationary increments. II: Riemann-Liouville (the paper's).")
    seed = param.Integer(0, bounds=(0, 999), label="seed", doc="Both samples' keys derive from seed.")

    def warm_up(self) -> None:
        warm_up_kernels()

    @functools.cached_property
    def _exact_cache(self) -> dict:
        return {}

    def _exact(self, seed: int, hurst: float) -> dict:
        # K, gamma_max and the type do not change the exact sample: keep the last one.
        key = (seed, hurst)
        if key not in self._exact_cache:
            self._exact_cache.clear()
            self._exact_cache[key] = jax.device_get(exact_kernel(np.int32(seed), np.float32(hurst)))
        return self._exact_cache[key]

    def compute(self) -> dict:
        hurst, K, seed = float(self.hurst), int(self.K), int(self.seed)
        gamma_max, kind = float(self.gamma_max), KINDS[self.kind]
        markov.check_K(K)
        exact = self._exact(seed, hurst)
        w = _weights(hurst, K, gamma_max, kind)
        _check_finite("optimal weights", w["weights"], w["errors"], w["ma_variance"])
        ma = _markov_paths(seed, hurst, w, kind)
        _check_finite("MA-fBM paths", ma["paths"])
        t_var = _T[_VAR_IDX]
        return _float32_columns({
            "exact_paths": {"t": _T, **{f"p{i}": exact["paths"][i] for i in range(N_SHOWN)}},
            "ma_paths": {"t": _T, **{f"p{i}": ma["paths"][i] for i in range(N_SHOWN)}},
            "variance": {
                "t": t_var,
                "fbm": t_var ** (2 * hurst),
                "target": w["exact_variance"],
                "ma": w["ma_variance"],
                "exact_sample": exact["variance"],
                "ma_sample": ma["variance"],
            },
            "acf": {"lag": _LAG, "fgn": _fgn_correlation(hurst), "exact": exact["acf"], "ma": ma["acf"]},
            # Floored at float64 rounding, so an exact fit (H = 1/2) stays on the log axis.
            "errors": {"K": np.arange(1, K_SLOTS + 1), "error": np.maximum(w["errors"] / w["norm"], ROUNDING)},
            "current": {"K": [K], "error": [max(w["errors"][K - 1] / w["norm"], ROUNDING)]},
            "summary": _summary(hurst, K, gamma_max, kind, w, exact, ma),
            "estimates": {name: (float(s["hurst"]), float(s["stderr"])) for name, s in (("exact", exact), ("ma", ma))},
        })

    def views(self) -> list:
        src = {name: self.source(name) for name in ("exact_paths", "ma_paths", "variance", "acf", "errors", "current")}
        paths = pn.Row(_paths_figure(src["exact_paths"], "exact fBM (Davies-Harte)"),
                       _paths_figure(src["ma_paths"], "MA-fBM: K OU processes, one W"))
        stats = pn.Row(_variance_figure(src["variance"]), _acf_figure(src["acf"]))
        return [paths, self.text("summary", width=800), stats, _error_figure(src)]


def _figure(title: str, width: int = 400, **kwargs):
    fig = figure(title=title, width=width, **{**_FIGURE, **kwargs})
    fig.title.text_font_size = "12pt"
    return fig


def _legend(fig, location: str = "top_left") -> None:
    fig.legend.location = location
    fig.legend.label_text_font_size = "9pt"
    fig.legend.background_fill_alpha = 0.7
    fig.legend.padding = fig.legend.spacing = 1


def _paths_figure(source, title: str) -> pn.pane.Bokeh:
    fig = _figure(title, x_axis_label="t", y_axis_label="B_t")
    for i, color in zip(range(N_SHOWN), _COLORS):
        fig.line("t", f"p{i}", source=source, color=color, line_width=1)
    return pn.pane.Bokeh(fig)


def _variance_figure(source) -> pn.pane.Bokeh:
    fig = _figure("variance of B_t (log-log)", height=320, x_axis_type="log", y_axis_type="log",
                  x_axis_label="t", y_axis_label="Var B_t")
    fig.line("t", "fbm", source=source, color="black", line_width=2, legend_label="t^2H (fBM)")
    fig.line("t", "target", source=source, color="#969696", line_width=2, line_dash="dotted",
             legend_label="target (this type)")
    fig.line("t", "ma", source=source, color="#e6550d", line_width=2, line_dash="dashed",
             legend_label="MA-fBM closed form")
    fig.scatter("t", "exact_sample", source=source, color="black", size=4, legend_label="exact sample")
    fig.scatter("t", "ma_sample", source=source, color="#e6550d", size=4, marker="triangle",
                legend_label="MA-fBM sample")
    _legend(fig)
    legend = fig.legend[0]  # five entries: above the plot, clear of the data
    legend.ncols = 2
    fig.add_layout(legend, "above")
    return pn.pane.Bokeh(fig)


def _acf_figure(source) -> pn.pane.Bokeh:
    fig = _figure("autocorrelation of the increments", height=320, x_axis_label="lag k (steps of 1/512)",
                  y_axis_label="correlation", y_range=(-0.6, 1.05))
    fig.line("lag", "fgn", source=source, color="black", line_width=2, legend_label="fGn theory")
    fig.scatter("lag", "exact", source=source, color="black", size=5, legend_label="exact sample")
    fig.scatter("lag", "ma", source=source, color="#e6550d", size=5, marker="triangle",
                legend_label="MA-fBM sample")
    _legend(fig, "top_right")
    return pn.pane.Bokeh(fig)


def _error_figure(src: dict) -> pn.pane.Bokeh:
    fig = _figure("closed-form error ∫E(B − B̂)²dt / ∫E B²dt against K (this gamma_max)", width=800,
                  y_axis_type="log", x_axis_label="K (OU processes)", y_axis_label="relative error")
    fig.line("K", "error", source=src["errors"], color="#e6550d", line_width=2)
    fig.scatter("K", "error", source=src["errors"], color="#e6550d", size=5)
    fig.scatter("K", "error", source=src["current"], color="black", size=12, marker="circle_x",
                fill_alpha=0, line_width=2, legend_label="this K")
    _legend(fig, "top_right")
    return pn.pane.Bokeh(fig)
