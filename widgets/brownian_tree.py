r"""Dashboard for chapter 01: the Virtual Brownian Tree, its leaves, and the law of its increments.

Three views of one :class:`solverlab.brownian.BrownianTree` on :math:`[0, 1]`:

1. the path :math:`W_t` on a coarse grid with the window :math:`[a, b]` shaded, and the same path
   queried on a finer grid inside the window: one key, one path, so the coarse curve never moves
   when only the window does;
2. a zoom on :math:`[a, b]` with the tree's leaves (intervals of length ``leaf_length <= tol``)
   shaded. Inside a leaf the tree only bridges, with one draw per leaf: queries closer than ``tol``
   are not Brownian in law, and at large ``tol`` the zoom shows it;
3. running moments of the increment over :math:`M` independent keys against the law
   (Jelincic, Foster & Kidger 2024; Foster's thesis):
   :math:`W_{a,b} \sim N(0, h)`, :math:`H_{a,b} \sim N(0, h/12)`, independent, with
   :math:`h = b - a`. The plot shows the running means of :math:`W^2/h` and :math:`12H^2/h`
   (both tend to 1, standard error :math:`\sqrt{2/m}`) and of :math:`\sqrt{12}\,WH/h` (tends to 0,
   standard error :math:`1/\sqrt m`), with the theory and its :math:`\pm 2` s.e. band in the figure.

Every slider value reaches the kernels as a traced float32/int32 scalar and every shape is a
module constant, so after :func:`warm_up_kernels` no slider move compiles. The figures are Bokeh
figures whose ColumnDataSources the base class refills in place (see :mod:`._base`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import panel as pn
import param
from bokeh.models import Band, ColumnDataSource, Span
from bokeh.plotting import figure

from solverlab.brownian import BrownianTree

from ._base import Dashboard

__all__ = ["BrownianTreeDashboard", "path_kernel", "moments_kernel", "warm_up_kernels"]

#: Points of the coarse grid on [0, 1] and of the fine grid on [a, b].
N_COARSE = 257
N_FINE = 513
#: Independent keys behind the running moments.
N_KEYS = 2048
#: Leaves are shaded in the zoom only when the window holds at most this many.
MAX_LEAVES_DRAWN = 64

_T_COARSE = np.linspace(0.0, 1.0, N_COARSE, dtype=np.float32)
_U_FINE = np.linspace(0.0, 1.0, N_FINE, dtype=np.float32)
#: Sample sizes m at which the running moments are shown (log-spaced, 8 .. N_KEYS).
M_SHOWN = np.unique(np.geomspace(8, N_KEYS, 160).astype(np.int32))

_FIGURE = dict(width=760, height=250, tools="", toolbar_location=None)


def _tree(key, tol, levy_area: bool) -> BrownianTree:
    """The dashboard's tree: a scalar Brownian motion on [0, 1], with H when ``levy_area``."""
    return BrownianTree(0.0, 1.0, tol, (), key, levy_area="space-time" if levy_area else None)


@functools.partial(jax.jit, static_argnames="levy_area")
def path_kernel(seed, tol, a, b, *, levy_area: bool):
    """One path from ``key(seed)``: ``W`` on the coarse grid and on the fine grid of ``[a, b]``.

    Args:
        seed: int32 scalar. tol, a, b: float32 scalars with ``0 <= a < b <= 1``.
        levy_area: static; also return :math:`H_{a,b}`.

    Returns:
        dict with ``W`` (N_COARSE,), ``t_fine`` and ``W_fine`` (N_FINE,), ``W_ab``, ``H_ab`` (NaN
        without Levy area), ``leaf_length`` and ``depth``.
    """
    tree = _tree(jax.random.key(seed), tol, levy_area)
    t_fine = a + (b - a) * _U_FINE
    increment = tree.evaluate(a, b)
    return {
        "W": tree.evaluate(0.0, _T_COARSE).W,
        "t_fine": t_fine,
        "W_fine": tree.evaluate(0.0, t_fine).W,
        "W_ab": increment.W,
        "H_ab": increment.H if levy_area else jnp.full((), jnp.nan, increment.W.dtype),
        "leaf_length": tree.leaf_length,
        "depth": tree.depth,
    }


@functools.partial(jax.jit, static_argnames="levy_area")
def moments_kernel(seed, tol, a, b, *, levy_area: bool):
    r"""Running means over ``N_KEYS`` independent trees of the standardised increment over ``[a, b]``.

    With :math:`h = b - a`, the :math:`m`-th entries are the means over the first :math:`m` keys of
    :math:`W^2/h`, :math:`12 H^2/h` and :math:`\sqrt{12}\,W H/h` (H ones NaN without Levy area),
    taken at ``m in M_SHOWN``.
    """
    keys = jax.random.split(jax.random.fold_in(jax.random.key(seed), 1), N_KEYS)
    increments = jax.vmap(lambda k: _tree(k, tol, levy_area).evaluate(a, b))(keys)
    h = b - a
    w = increments.W
    m = jnp.asarray(M_SHOWN)

    def running_mean(x):
        return jnp.cumsum(x)[m - 1] / m.astype(x.dtype)

    nan = jnp.full(m.shape, jnp.nan, w.dtype)
    if levy_area:
        hh = increments.H
        h2, wh = running_mean(12.0 * hh * hh / h), running_mean(jnp.sqrt(12.0) * w * hh / h)
    else:
        h2, wh = nan, nan
    return {"w2": running_mean(w * w / h), "h2": h2, "wh": wh}


@functools.cache
def warm_up_kernels() -> None:
    """Compile both kernels for both Levy-area settings, once per process."""
    args = (np.int32(0), np.float32(1e-3), np.float32(0.25), np.float32(0.5))
    for levy_area in (False, True):
        jax.block_until_ready(path_kernel(*args, levy_area=levy_area))
        jax.block_until_ready(moments_kernel(*args, levy_area=levy_area))


def _leaf_bands(a: float, b: float, leaf: float) -> tuple[int, dict]:
    """Number of leaves meeting ``[a, b]``, and every other one of them clipped to the window."""
    first, last = int(np.floor(a / leaf)), int(np.ceil(b / leaf))
    count = max(last - first, 1)
    k = np.arange(first, last) if count <= MAX_LEAVES_DRAWN else np.zeros(0, int)
    k = k[k % 2 == 0]
    return count, {"x0": np.clip(k * leaf, a, b), "x1": np.clip((k + 1) * leaf, a, b)}


def _summary(tol: float, path: dict, leaves: int, a: float, b: float) -> str:
    """The numbers behind the plots, as Markdown."""
    depth = int(path["depth"])
    drawn = "shaded" if leaves <= MAX_LEAVES_DRAWN else f"not shaded: more than {MAX_LEAVES_DRAWN}"
    h_ab = "(Levy area off)" if np.isnan(path["H_ab"]) else f"{path['H_ab']:+.4f}"
    text = (
        f"**tol** = {tol:.2e}: depth J = {depth}, leaf length 2^-{depth} = {float(path['leaf_length']):.3e};"
        f" **{leaves} leaves** meet [a, b] ({drawn}).  \n"
        f"This path: W(a, b) = {path['W_ab']:+.4f}, H(a, b) = {h_ab}, with h = b - a = {b - a:.3g}."
    )
    if leaves == 1:
        text += (
            "  \n**a and b share one leaf**: below tol the tree interpolates with one draw per leaf, so "
            "the increment is not Brownian in law and the moments below miss the theory. Lower tol."
        )
    return text


def _figure(title: str, **kwargs):
    """A fixed-size figure without toolbar; axes follow the data in the browser unless given."""
    fig = figure(title=title, **{**_FIGURE, **kwargs})
    fig.title.text_font_size = "13pt"
    return fig


def _legend_above(fig) -> None:
    """One row of legend entries between the title and the plot, clear of the data."""
    legend = fig.legend[0]
    legend.orientation = "horizontal"
    legend.label_text_font_size = "10pt"
    legend.padding = legend.margin = 2
    legend.border_line_alpha = 0
    fig.add_layout(legend, "above")


class BrownianTreeDashboard(Dashboard):
    """The Virtual Brownian Tree: one key, one path at any resolution, increments with the right law."""

    title = "Virtual Brownian Tree"
    description = (
        "One key fixes the whole path. Lower **tol** to refine it: the coarse path keeps its shape and the "
        "tree adds detail inside its leaves. Move **[a, b]** to zoom. The bottom plot samples the increment "
        "over [a, b] from many keys against its law: W ~ N(0, h), H ~ N(0, h/12), independent."
    )
    kernels = (path_kernel, moments_kernel)
    widgets = {
        "log10_tol": {"type": pn.widgets.FloatSlider, "step": 0.1, "format": "0.0"},
        "window": {"type": pn.widgets.RangeSlider, "step": 0.005, "format": "0.000"},
        "seed": {"type": pn.widgets.IntSlider},
        "levy_area": {"type": pn.widgets.Checkbox},
    }

    log10_tol = param.Number(-2.0, bounds=(-6.0, -1.0), step=0.1, label="log10 tol",
                             doc="Tree tolerance: leaves have length <= tol = 10**log10_tol.")
    window = param.Range((0.25, 0.5), bounds=(0.0, 1.0), step=0.005, label="zoom window [a, b]",
                         doc="The interval [a, b] that is zoomed and whose increment is sampled.")
    seed = param.Integer(0, bounds=(0, 999), label="seed", doc="The path's key is jax.random.key(seed).")
    levy_area = param.Boolean(True, label="space-time Levy area H",
                              doc="Also generate H (levy_area='space-time'); changes the random stream.")

    def warm_up(self) -> None:
        warm_up_kernels()

    def compute(self) -> dict:
        a, b = (float(x) for x in self.window)
        if not a < b:
            raise ValueError(f"zoom window [a, b] must have a < b, got a = {a:g}, b = {b:g}: pull the handles apart")
        # Fixed dtypes: a Python int from the browser would otherwise trace a new variant.
        tol = np.float32(10.0 ** self.log10_tol)
        args = (np.int32(self.seed), tol, np.float32(a), np.float32(b))
        path = jax.device_get(path_kernel(*args, levy_area=self.levy_area))
        moments = jax.device_get(moments_kernel(*args, levy_area=self.levy_area))
        leaves, bands = _leaf_bands(a, b, float(path["leaf_length"]))
        inside = (_T_COARSE >= a) & (_T_COARSE <= b)
        return {
            "coarse": {"t": _T_COARSE, "W": path["W"]},
            "fine": {"t": path["t_fine"], "W": path["W_fine"]},
            "inside": {"t": _T_COARSE[inside], "W": path["W"][inside]},
            "window": {"x0": [a], "x1": [b]},
            "leaves": bands,
            "moments": {"m": M_SHOWN, **moments},
            "summary": _summary(float(tol), path, leaves, a, b),
        }

    def views(self) -> list:
        # One source per output, shared by the figures that draw it (sent to the browser once).
        src = {name: self.source(name) for name in ("coarse", "fine", "inside", "window", "leaves", "moments")}
        return [_path_figure(src), _zoom_figure(src), self.text("summary", width=760), _moments_figure(src)]


def _path_figure(src: dict) -> pn.pane.Bokeh:
    """The path on [0, 1] with the window shaded and the refined path inside it."""
    fig = _figure("W on [0, 1]: one key, one path", x_axis_label="t", y_axis_label="W")
    fig.vstrip(x0="x0", x1="x1", source=src["window"], color="#9ecae1", alpha=0.35)
    fig.line("t", "W", source=src["coarse"], color="#555555", line_width=1.5,
             legend_label=f"coarse grid ({N_COARSE} points)")
    fig.line("t", "W", source=src["fine"], color="#e6550d", line_width=1,
             legend_label=f"[a, b] refined ({N_FINE} points)")
    _legend_above(fig)
    return pn.pane.Bokeh(fig)


def _zoom_figure(src: dict) -> pn.pane.Bokeh:
    """The window: the refined path, the coarse grid points on it, every other leaf shaded."""
    fig = _figure("zoom on [a, b]: shaded bands are every other leaf of the tree",
                  x_axis_label="t", y_axis_label="W")
    fig.vstrip(x0="x0", x1="x1", source=src["leaves"], color="#bdbdbd", alpha=0.4)
    fig.line("t", "W", source=src["fine"], color="#e6550d", line_width=1.5,
             legend_label="path on the fine grid")
    fig.scatter("t", "W", source=src["inside"], color="#555555", size=5,
                legend_label="coarse grid points")
    _legend_above(fig)
    return pn.pane.Bokeh(fig)


def _moments_figure(src: dict) -> pn.pane.Bokeh:
    """Running means of the standardised increment against the law, with +- 2 standard errors."""
    fig = _figure(f"increment over [a, b], first m of {N_KEYS} keys: theory dashed, ± 2 s.e. grey",
                  x_axis_type="log", x_range=(float(M_SHOWN[0]), float(N_KEYS)), y_range=(-0.8, 2.2),
                  x_axis_label="m (number of keys)", y_axis_label="running mean")
    m = M_SHOWN.astype(float)
    for centre, error in ((1.0, 2.0 * np.sqrt(2.0 / m)), (0.0, 2.0 / np.sqrt(m))):
        band = ColumnDataSource({"m": m, "lower": centre - error, "upper": centre + error})
        fig.add_layout(Band(base="m", lower="lower", upper="upper", source=band,
                            fill_color="#d9d9d9", fill_alpha=0.6, line_color="#bdbdbd", level="underlay"))
        fig.add_layout(Span(location=centre, dimension="width", line_color="black", line_dash="dashed",
                            line_width=1.5))
    for column, color, label in (("w2", "#3182bd", "W²/h  (theory 1)"),
                                 ("h2", "#e6550d", "12 H²/h  (theory 1)"),
                                 ("wh", "#31a354", "√12 W H/h  (theory 0)")):
        fig.line("m", column, source=src["moments"], color=color, line_width=2, legend_label=label)
    _legend_above(fig)
    return pn.pane.Bokeh(fig)
