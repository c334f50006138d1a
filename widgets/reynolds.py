r"""Dashboard for chapter 12: the Reynolds number, in three flows, streamed as they run.

:math:`Re = UL/\nu` is the ratio of inertia to viscosity; one slider turns it from 10 to 10,000 in

* the **lid-driven cavity** (:mod:`solverlab.fluids.lid_driven`): vorticity-streamfunction finite
  differences on :math:`(n + 1)^2` nodes, marched from rest to steady state; its centreline
  velocities are drawn with Ghia, Ghia & Shin's (1982) points where they tabulate the Reynolds number
  (:mod:`solverlab.fluids.ghia`);
* **Kolmogorov flow** (:mod:`solverlab.fluids.periodic`): the periodic :math:`2\pi` box forced by
  :math:`\sin(4y)` with a linear drag 0.1 (as Kochkov et al. 2021), pseudo-spectral with ETDRK4,
  started from random vorticity of ``key(seed)``; its energy spectrum is drawn against the
  :math:`k^{-3}` of the enstrophy cascade;
* the **cylinder wake** (:mod:`solverlab.fluids.obstacles`): flow at speed 1 past a cylinder of
  diameter 1 in a periodic :math:`16 \times 8` box with a sponge (Brinkman penalisation), its lift and
  drag coefficients recorded as vortices shed; the Strouhal number is estimated once enough periods
  have passed.

The flow runs in chunks between frames: a periodic callback advances it for about ``BUDGET_S`` of
compute and pushes the new frame (vorticity, velocity arrows, the flow's profiles and history, a
progress bar), so the page stays responsive while a long run goes on. A new Reynolds number continues
from the current flow (as an experiment would; the cavity's steady state at these Re is unique), a
new flow, grid or seed starts afresh. The Reynolds number and the time step are traced arguments of
the kernels (no recompiles); a grid size is a shape, and compiles once per size and flow (the warm-up
compiles the default size, ``python -m solverlab.widgets.warmup`` all of them). A run that blows up
(not finite, or past its CFL limit) stops with the message and the CFL number seen; a grid too coarse
for the Reynolds number says so while it runs.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import panel as pn
import param
from bokeh.models import LinearColorMapper
from bokeh.palettes import RdBu11
from bokeh.plotting import figure

from solverlab import SolverError
from solverlab.fluids import lid_driven as cavity_module
from solverlab.fluids import diagnostics, ghia, obstacles, periodic
from solverlab.fluids.grid import PeriodicGrid

from ._base import Dashboard

log = logging.getLogger("solverlab.widgets")

__all__ = ["ReynoldsDashboard", "FLOWS", "GRID_SIZES", "REYNOLDS", "warm_up_kernels", "make_simulation"]

#: The Reynolds slider's values (log-spaced; Ghia's 100 and 400 among them).
REYNOLDS = (10, 15, 20, 30, 50, 70, 100, 150, 200, 300, 400, 500, 700, 1000, 1500, 2000, 3000, 5000, 7000, 10000)
FLOWS = {"lid-driven cavity": "cavity", "Kolmogorov flow (periodic)": "kolmogorov", "cylinder wake": "cylinder"}
#: Grid sizes n: the cavity has (n + 1)^2 nodes, the periodic box n^2 points, the wake box 2n x n.
GRID_SIZES = (32, 64, 128)
DEFAULT_GRID = 64
#: Compute per frame (seconds) and the frame period (ms): the server is busy about a third of the time.
BUDGET_S = 0.04
PERIOD_MS = 120
#: Arrows on an ARROWS x ARROWS lattice; history points kept per series.
ARROWS = 16
HISTORY = 600
#: Kolmogorov flow: forcing wavenumber, drag, end time; cavity: steady-state tolerance, time cap.
KOLMOGOROV_K, KOLMOGOROV_DRAG, KOLMOGOROV_T = 4, 0.1, 60.0
CAVITY_TOL, CAVITY_T = 1e-4, 300.0
#: Cylinder wake: box, cylinder, end time, start of the Strouhal estimate, steps per compiled call.
WAKE_BOX, WAKE_CYLINDER, WAKE_T, WAKE_ST_FROM, WAKE_CHUNK = (16.0, 8.0), (4.0, 4.0, 0.5), 80.0, 30.0, 8

_FIGURE = dict(tools="", toolbar_location=None)
_COLORS = ("#3182bd", "#e6550d", "#31a354", "#756bb1")


# --- the three simulations: reset, advance for a time budget, draw a frame ------------------------------
class _Simulation:
    """One flow on one grid: ``advance(reynolds, budget)`` runs chunks, ``frame()`` draws the state."""

    flow: str
    extent: tuple[float, float]

    #: How long a run goes (from its start, or from the last change of Re).
    duration: float = math.inf

    def __init__(self, n: int, seed: int):
        self.n, self.seed = n, seed
        self.steps, self.time, self.cfl, self.done = 0, 0.0, 0.0, False
        self.t_start = 0.0
        self.chunk = 4  # steps per call, adapted to the budget
        self.history: dict[str, list] = {}

    def advance(self, reynolds: float, budget: float) -> None:
        """Step for about ``budget`` seconds; raises SolverError on a blow-up."""
        start = time.perf_counter()
        while not self.done and time.perf_counter() - start < budget:
            t0 = time.perf_counter()
            self._advance_chunk(reynolds, self.chunk)
            took = time.perf_counter() - t0
            # Aim a chunk at half the budget, so a frame takes one or two of them.
            self.chunk = int(np.clip(self.chunk * 0.5 * budget / max(took, 1e-4), 1, 4 * self.chunk))

    def retarget(self) -> None:
        """A new Reynolds number: go on from the current flow for another ``duration``."""
        self.t_start, self.done = self.time, False

    def progress(self) -> int:
        return int(np.clip(100 * (self.time - self.t_start) / self.duration, 0, 100))

    def _record(self, **series) -> None:
        for name, values in series.items():
            column = self.history.setdefault(name, [])
            column.extend(np.atleast_1d(np.asarray(values, np.float64)).tolist())
        if len(next(iter(self.history.values()))) > HISTORY:  # keep every other point
            self.history = {k: v[::2] for k, v in self.history.items()}

    #: The message of the failure that stopped the run (shown until a new run starts).
    failure: str = ""

    def _blowup(self, cfl: float, finite: bool, limit: float, hint: str) -> SolverError:
        self.done = True
        what = "the vorticity stopped being finite" if not finite else f"the CFL number reached {cfl:.3g}"
        self.failure = (f"The {self.flow} run blew up at t = {self.time:.3g} ({self.steps} steps): {what} "
                        f"(CFL {cfl:.3g} seen, stability limit {limit:.3g}). {hint}")
        return SolverError(self.failure)


class _Cavity(_Simulation):
    flow, extent, duration = "cavity", (1.0, 1.0), CAVITY_T

    def __init__(self, n, seed):
        super().__init__(n, seed)
        self.state = cavity_module.cavity_init(n, jnp.float32)
        self.residual = math.inf
        self.history = {"t": [], "residual": []}
        self._checkpoint = self.state  # the residual compares the velocity with this state's

    def _advance_chunk(self, reynolds, n_steps):
        out = cavity_module.cavity_advance(self.state, np.float32(reynolds), np.int32(n_steps))
        cfl, finite = float(out.cfl), bool(out.finite)
        self.cfl = max(self.cfl, cfl)
        if not finite or cfl > cavity_module.CFL_BLOWUP:
            raise self._blowup(cfl, finite, cavity_module.CFL_BLOWUP, _cavity_advice(reynolds))
        self.state = out.state
        self.steps, self.time = int(out.state.steps), float(out.state.time)
        # The residual over a fixed span of steps, as cavity() checks it: measured over however many
        # steps a frame's budget allowed, it would depend on the machine's speed.
        span = self.steps - int(self._checkpoint.steps)
        if span >= cavity_module.check_interval(reynolds, float(out.dt)):
            self.residual = cavity_module.residual(self._checkpoint, self.state, reynolds)
            self._checkpoint = self.state
            self._record(t=self.time, residual=self.residual)
        self.done = self.residual < CAVITY_TOL or self.time - self.t_start >= self.duration

    def retarget(self) -> None:
        super().retarget()
        self.residual = math.inf
        self._checkpoint = self.state

    def progress(self) -> int:
        if not math.isfinite(self.residual):
            return 0
        # Residual from ~1 down to the tolerance, on a log scale.
        return int(np.clip(100 * math.log10(max(self.residual, CAVITY_TOL)) / math.log10(CAVITY_TOL), 0, 100))

    def frame(self, reynolds) -> dict:
        omega = np.asarray(self.state.omega)
        u, v = (np.asarray(a) for a in cavity_module.velocity(self.state.psi))
        nodes = np.linspace(0.0, 1.0, self.n + 1)
        mid = self.n // 2
        profiles = {"u_y": nodes, "u": u[mid, :], "v_x": nodes, "v": v[:, mid]}
        points = {"u_y": [], "u": [], "v_x": [], "v": []}
        if int(reynolds) in ghia.REYNOLDS:
            (points["u_y"], points["u"]), (points["v_x"], points["v"]) = (ghia.centerline_u(int(reynolds)),
                                                                         ghia.centerline_v(int(reynolds)))
        status = (f"steady: R = {self.residual:.1e} < {CAVITY_TOL:g}" if self.residual < CAVITY_TOL
                  else f"marching to steady state: R = {self.residual:.1e} (stops below {CAVITY_TOL:g})")
        note = ""
        if reynolds / self.n > 16:
            note = (f"Under-resolved: the cell Reynolds number Re h = {reynolds / self.n:.0f} is above 16, where "
                    f"the central differences wiggle and may blow up. {_cavity_advice(reynolds)}")
        return {"omega": omega, "u": u, "v": v, "nodes": (nodes, nodes), "profiles": profiles, "points": points,
                "status": status, "note": note}


def _cavity_advice(reynolds: float) -> str:
    """Which grid resolves the cavity at ``reynolds`` (cell Reynolds number Re/n at most 16)."""
    needed = math.ceil(reynolds / 16)
    fine = next((n for n in GRID_SIZES if n >= needed), None)
    if fine is None:
        return (f"No grid offered here resolves Re = {reynolds:g} (it needs n of about {needed}): "
                f"lower the Reynolds number to {16 * GRID_SIZES[-1]} or less.")
    return f"Take grid size n = {fine} or more, or a smaller Reynolds number."


class _Kolmogorov(_Simulation):
    flow, extent, duration = "Kolmogorov", (2 * math.pi, 2 * math.pi), KOLMOGOROV_T

    def __init__(self, n, seed):
        super().__init__(n, seed)
        self.grid = PeriodicGrid.square(n)
        self.forcing_hat = self.grid.fft(periodic.kolmogorov_forcing(self.grid, KOLMOGOROV_K).astype(jnp.float32))
        # Energy peaked at k = 4 (at most n/9, where the coarsest grid still resolves the peak).
        omega0 = periodic.decaying_turbulence(jax.random.key(seed), self.grid, peak_wavenumber=min(4.0, n / 9),
                                              energy=0.5, dtype=jnp.float32)
        self.omega_hat = self.grid.fft(omega0)
        self.stats = jax.device_get(_periodic_stats(self.omega_hat, grid=self.grid))
        self.history = {"t": [], "energy": [], "enstrophy": []}

    def _advance_chunk(self, reynolds, n_steps):
        # dt from the CFL number of the current state: traced, so a new dt never recompiles.
        dt = min(periodic.DEFAULT_CFL["etdrk4"] / max(float(self.stats["speed"]), 1e-6), 0.1)
        nu = float(periodic.kolmogorov_viscosity(float(reynolds), self.grid))
        out = periodic.advance(self.omega_hat, self.grid, np.float32(nu), np.float32(dt), np.int32(n_steps),
                               self.forcing_hat, "etdrk4", np.float32(KOLMOGOROV_DRAG),
                               np.float32(periodic.STABILITY_CFL["etdrk4"]))
        steps, cfl, finite = int(out.steps), float(out.cfl), bool(out.finite)
        self.cfl = max(self.cfl, cfl)
        if not finite or steps == 0:  # not finite, or the CFL limit passed at once: no way on
            raise self._blowup(cfl, finite, periodic.STABILITY_CFL["etdrk4"],
                               "Lower the Reynolds number or take a finer grid.")
        # A stop at the CFL limit leaves a good state: keep it; the next chunk's dt follows its speed.
        self.steps, self.time = self.steps + steps, self.time + steps * dt
        self.omega_hat = out.omega_hat
        self.stats = jax.device_get(_periodic_stats(self.omega_hat, grid=self.grid))
        self._record(t=self.time, energy=self.stats["energy"], enstrophy=self.stats["enstrophy"])
        self.done = self.time - self.t_start >= self.duration

    def frame(self, reynolds) -> dict:
        s = self.stats
        nodes = (np.arange(self.n) * self.grid.dx, np.arange(self.n) * self.grid.dy)
        k, e = np.asarray(s["k"]), np.asarray(s["spectrum"])
        keep = (k > 0) & (e > 0)
        k, e = k[keep], e[keep]
        # The enstrophy cascade's k^-3 through the spectrum at the forcing wavenumber.
        at = np.argmin(np.abs(k - KOLMOGOROV_K)) if len(k) else 0
        reference = e[at] * (k / k[at]) ** -3.0 if len(k) else k
        tail = float(e[-1] / e.max()) if len(e) else 0.0
        note = ""
        if tail > 1e-3:
            note = (f"Under-resolved: the energy spectrum at the 2/3-rule cutoff is {tail:.0e} of its peak "
                    "(spectral blocking): take a finer grid or a smaller Reynolds number.")
        status = f"t = {self.time:.1f} of {self.t_start + self.duration:g}: energy {float(s['energy']):.3g}, enstrophy {float(s['enstrophy']):.3g}"
        return {"omega": np.asarray(s["omega"]), "u": np.asarray(s["u"]), "v": np.asarray(s["v"]), "nodes": nodes,
                "profiles": {"k": k, "E": e, "reference": reference}, "status": status, "note": note}


@functools.partial(jax.jit, static_argnames="grid")
def _periodic_stats(omega_hat, *, grid):
    """Vorticity and velocity on the grid, the CFL speed, energy, enstrophy and the energy spectrum."""
    u, v = grid.velocity(omega_hat)
    k, spectrum = diagnostics.energy_spectrum(omega_hat, grid)
    return {"omega": grid.ifft(omega_hat), "u": u, "v": v,
            "speed": jnp.max(jnp.abs(u)) / grid.dx + jnp.max(jnp.abs(v)) / grid.dy,
            "energy": diagnostics.energy(omega_hat, grid), "enstrophy": diagnostics.enstrophy(omega_hat, grid),
            "k": k, "spectrum": spectrum}


class _Cylinder(_Simulation):
    flow, extent, duration = "cylinder wake", WAKE_BOX, WAKE_T

    def __init__(self, n, seed):
        super().__init__(n, seed)
        self.grid = PeriodicGrid(2 * n, n, *WAKE_BOX)
        x, y, r = WAKE_CYLINDER
        self.flow_setup = _wake_flow(self.grid)
        # The seed sets the sign and size of the small vortex that starts the shedding early.
        kick = 0.5 * (1.0 if seed % 2 == 0 else -1.0) * (1.0 + 0.1 * (seed // 2 % 5))
        self.state = obstacles.initial_state(self.flow_setup, vortex=(x + 2 * r, y + r, kick * 2 * r, 0.5 * r))
        self.dt = obstacles.stable_dt(self.flow_setup, 0.5)
        self.history = {"t": [], "lift": [], "drag": []}
        self.strouhal = None

    def _advance_chunk(self, reynolds, n_steps):
        for _ in range(max(1, n_steps // WAKE_CHUNK)):
            state, info = obstacles.obstacle_advance(self.flow_setup, self.state, np.float32(reynolds),
                                                     np.float32(self.dt), WAKE_CHUNK)
            cfl = float(info.max_cfl)
            self.cfl = max(self.cfl, cfl)
            if not bool(info.ok):
                raise self._blowup(cfl, bool(info.finite), obstacles.CFL_BLOWUP,
                                   "Lower the Reynolds number or take a finer grid.")
            self.state = state
            self.steps += WAKE_CHUNK
            self.time = float(state.time)
            self._record(t=np.asarray(info.times), lift=np.asarray(info.lift), drag=np.asarray(info.drag))
        if self.time > self.t_start + WAKE_ST_FROM:
            try:
                t, lift = np.asarray(self.history["t"]), np.asarray(self.history["lift"])
                self.strouhal = obstacles.strouhal(t, lift, 2 * WAKE_CYLINDER[2], 1.0,
                                                   t_min=self.t_start + WAKE_ST_FROM)
            except (ValueError, SolverError):
                self.strouhal = None  # no whole shedding period yet (or none at all: steady wake)
        self.done = self.time - self.t_start >= self.duration

    def retarget(self) -> None:
        super().retarget()
        self.strouhal = None

    def frame(self, reynolds) -> dict:
        omega, u, v = (np.asarray(a) for a in _wake_fields(self.flow_setup, self.state.omega_hat))
        nodes = (np.arange(self.grid.nx) * self.grid.dx, np.arange(self.grid.ny) * self.grid.dy)
        st = "" if self.strouhal is None else f", Strouhal number St = f D / U = {self.strouhal:.3f}"
        status = f"t = {self.time:.1f} of {self.t_start + self.duration:g}{st}"
        d = 2 * WAKE_CYLINDER[2]
        note = ""
        if d / math.sqrt(reynolds) < 0.5 * self.grid.dy:  # 8 points per D give St at Re 100 within a few percent
            note = (f"Under-resolved: the boundary layer, about D/sqrt(Re) = {d / math.sqrt(reynolds):.3f}, is "
                    f"thinner than the grid spacing {self.grid.dy:.3f}: the wake is qualitative only.")
        return {"omega": omega, "u": u, "v": v, "nodes": nodes, "status": status, "note": note}


@functools.lru_cache(maxsize=None)
def _wake_flow(grid: PeriodicGrid):
    x, y, r = WAKE_CYLINDER
    return obstacles.make_obstacle_flow(grid, [obstacles.Cylinder(x, y, r)], 1.0, dtype=jnp.float32)


@jax.jit
def _wake_fields(flow, omega_hat):
    u, v = obstacles.velocity(flow, omega_hat)
    return flow.grid.ifft(omega_hat), u, v


_SIMULATIONS = {"cavity": _Cavity, "kolmogorov": _Kolmogorov, "cylinder": _Cylinder}


def make_simulation(flow: str, n: int, seed: int = 0) -> _Simulation:
    """A fresh simulation of ``flow`` (``"cavity"``, ``"kolmogorov"``, ``"cylinder"``) on grid size ``n``."""
    if flow not in _SIMULATIONS:
        raise ValueError(f"flow must be one of {', '.join(_SIMULATIONS)}, got {flow!r}")
    if n not in GRID_SIZES:
        raise ValueError(f"grid size must be one of {', '.join(map(str, GRID_SIZES))}, got {n!r}")
    return _SIMULATIONS[flow](n, seed)


#: Grid sizes whose kernels this process has compiled (or loaded from the persistent cache).
_COMPILED: set[int] = set()


@functools.cache
def warm_up_kernels(n: int = DEFAULT_GRID) -> float:
    """Compile every flow's step and frame kernels at grid size ``n`` (once per process); seconds taken."""
    start = time.perf_counter()
    for flow in _SIMULATIONS:
        sim = make_simulation(flow, n)
        sim._advance_chunk(100.0, 8)
        sim.frame(100.0)
    _COMPILED.add(n)
    return time.perf_counter() - start


# --- drawing -------------------------------------------------------------------------------------------
def _image_columns(omega, extent) -> tuple[dict, float]:
    """The vorticity as one image (rows = y), scaled by its 99th percentile into [-1, 1]."""
    scale = float(np.percentile(np.abs(omega), 99)) or 1.0
    image = np.clip(omega.T / scale, -1.0, 1.0).astype(np.float32)
    return {"image": [image], "x": [0.0], "y": [0.0], "dw": [extent[0]], "dh": [extent[1]]}, scale


def _arrow_columns(u, v, nodes) -> dict:
    """Velocity arrows on an ARROWS x ARROWS lattice, the longest one lattice spacing long."""
    x, y = nodes
    ix = np.linspace(0, len(x) - 1, ARROWS + 2).round().astype(int)[1:-1]
    iy = np.linspace(0, len(y) - 1, ARROWS + 2).round().astype(int)[1:-1]
    X, Y = np.meshgrid(x[ix], y[iy], indexing="ij")
    U, V = u[np.ix_(ix, iy)], v[np.ix_(ix, iy)]
    speed = float(np.max(np.hypot(U, V))) or 1.0
    length = min(x[-1] - x[0], y[-1] - y[0]) / ARROWS / speed
    cols = {"x0": X, "y0": Y, "x1": X + length * U, "y1": Y + length * V}
    return {k: c.ravel().astype(np.float32) for k, c in cols.items()}


def _after_start(history: dict, t_min: float = 1.0) -> dict:
    """The force history from ``t_min`` on: the impulsive start's spike (C_D ~ 30) would flatten the rest."""
    keep = history["t"] >= t_min
    return {k: v[keep] for k, v in history.items()}


def _empty(*names) -> dict:
    return {name: np.zeros(0, np.float32) for name in names}


class ReynoldsDashboard(Dashboard):
    """The Reynolds number in the cavity, the periodic box and behind a cylinder, streamed while it runs."""

    title = "The Reynolds number"
    description = (
        "**Re = U L / ν** compares inertia with viscosity. At small Re the flow is smooth and steady; as Re "
        "grows, boundary layers thin, vortices shed and the periodic flow turns turbulent. The flow runs "
        "while you watch (**run**); a new **Re** continues from the current flow, a new flow, grid or seed "
        "starts again. A new **grid size** compiles once (a few seconds). Colours: vorticity, scaled to its "
        "99th percentile (red positive, blue negative); arrows: velocity."
    )
    widgets = {
        "reynolds": {"type": pn.widgets.DiscreteSlider},
        "flow": {"type": pn.widgets.Select},
        "grid": {"type": pn.widgets.Select},
        "seed": {"type": pn.widgets.IntSlider},
        "run": {"type": pn.widgets.Checkbox},
    }

    reynolds = param.Selector(default=100, objects=list(REYNOLDS), label="Reynolds number Re",
                              doc="Re = U L / nu (cavity: lid speed and side; Kolmogorov: forcing scales; "
                                  "cylinder: inflow speed and diameter).")
    flow = param.Selector(default=next(iter(FLOWS)), objects=list(FLOWS), label="flow")
    grid = param.Selector(default=DEFAULT_GRID, objects=list(GRID_SIZES), label="grid size n",
                          doc="Points per side (the wake box has 2n x n); a new size compiles once.")
    seed = param.Integer(0, bounds=(0, 99), label="seed", doc="Initial vorticity (Kolmogorov), shedding kick (cylinder).")
    run = param.Boolean(True, label="run", doc="Advance the flow between frames.")
    restart = param.Action(lambda self: self.restart_run(), label="restart")

    def __init__(self, **params):
        self.sim: _Simulation | None = None
        self._config, self._reynolds = None, None
        self._lock = threading.RLock()
        self._compile_note = ""
        self._callback = None
        super().__init__(**params)

    actions = ("restart",)

    def warm_up(self) -> None:
        warm_up_kernels(DEFAULT_GRID)

    def compile_count(self) -> int:
        kernels = (cavity_module._advance, periodic._advance, obstacles._advance_jit, _periodic_stats, _wake_fields)
        return sum(kernel._cache_size() for kernel in kernels)

    # -- state ------------------------------------------------------------------------------------
    def _ensure_simulation(self, force: bool = False) -> bool:
        """A new simulation when the flow, grid or seed changed (or ``force``); True when made."""
        flow, n, seed = FLOWS[self.flow], int(self.grid), int(self.seed)
        seed = 0 if flow == "cavity" else seed  # the cavity starts from rest: no seed to change
        if force or self.sim is None or self._config != (flow, n, seed):
            first = n not in _COMPILED
            start = time.perf_counter()
            self.sim = make_simulation(flow, n, seed)
            self._config = (flow, n, seed)
            if first:  # compile the new size's kernels now (the server waits), and say so
                warm_up_kernels(n)
                self._compile_note = (f"Compiled the kernels for grid size {n} in {time.perf_counter() - start:.1f} s "
                                      "(once per size and server).")
            else:
                self._compile_note = ""
            return True
        return False

    def restart_run(self) -> None:
        self._ensure_simulation(force=True)
        self.refresh()

    def compute(self) -> dict:
        with self._lock:
            return self._compute()

    def _compute(self) -> dict:
        reynolds = float(self.reynolds)
        if not reynolds > 0:
            raise ValueError(f"reynolds must lie in (0, inf), got {reynolds:g}")
        fresh = self._ensure_simulation()
        if not fresh and reynolds != self._reynolds:
            self.sim.retarget()  # a new Re goes on from the current flow
        self._reynolds = reynolds
        return self._outputs_now()

    def _outputs_now(self) -> dict:
        sim, reynolds = self.sim, float(self.reynolds)
        frame = sim.frame(reynolds)
        image, scale = _image_columns(frame["omega"], sim.extent)
        cavity = sim.flow == "cavity"
        profiles = frame.get("profiles", {})
        history = {k: np.asarray(v, np.float32) for k, v in sim.history.items()}
        out = {
            "field": image,
            "arrows": _arrow_columns(frame["u"], frame["v"], frame["nodes"]),
            "obstacle": ({"x": [WAKE_CYLINDER[0]], "y": [WAKE_CYLINDER[1]], "r": [WAKE_CYLINDER[2]]}
                         if sim.flow == "cylinder wake" else _empty("x", "y", "r")),
            "u_profile": {"y": profiles["u_y"], "u": profiles["u"]} if cavity else _empty("y", "u"),
            "v_profile": {"x": profiles["v_x"], "v": profiles["v"]} if cavity else _empty("x", "v"),
            "u_ghia": ({"y": frame["points"]["u_y"], "u": frame["points"]["u"]} if cavity else _empty("y", "u")),
            "v_ghia": ({"x": frame["points"]["v_x"], "v": frame["points"]["v"]} if cavity else _empty("x", "v")),
            "spectrum": ({k: profiles[k] for k in ("k", "E", "reference")} if sim.flow == "Kolmogorov"
                         else _empty("k", "E", "reference")),
            "residual": ({"t": history["t"], "residual": history["residual"]} if cavity else _empty("t", "residual")),
            "energy": ({k: history[k] for k in ("t", "energy", "enstrophy")} if sim.flow == "Kolmogorov"
                       else _empty("t", "energy", "enstrophy")),
            "forces": (_after_start({k: history[k] for k in ("t", "lift", "drag")}) if sim.flow == "cylinder wake"
                       else _empty("t", "lift", "drag")),
            "summary": self._summary(frame, scale),
            "progress": sim.progress(),
            "problem": sim.failure or frame["note"],
        }
        return out

    def _summary(self, frame, scale) -> str:
        sim = self.sim
        ghia_note = ""
        if sim.flow == "cavity":
            ghia_note = (" Points: Ghia, Ghia & Shin (1982)." if int(self.reynolds) in ghia.REYNOLDS
                         else f" (Ghia's points are drawn at Re = {', '.join(map(str, ghia.REYNOLDS))}.)")
        lines = [f"**{self.flow}, Re = {float(self.reynolds):g}, grid {int(self.grid)}**: {frame['status']}.{ghia_note}",
                 f"{sim.steps} steps to t = {sim.time:.3g}; largest CFL number seen {sim.cfl:.2f}; "
                 f"colour scale ±{scale:.3g} (vorticity)."]
        if self._compile_note:
            lines.append(self._compile_note)
        return "  \n".join(lines)

    # -- streaming --------------------------------------------------------------------------------
    def tick(self) -> bool:
        """Advance the run by one frame's budget and push the frame; False when nothing was done."""
        if not self.run or self.sim is None or self.sim.done:
            return False
        if not self._lock.acquire(blocking=False):
            return False  # a frame or a parameter change is being computed (threaded server)
        try:
            self.sim.advance(float(self.reynolds), BUDGET_S)
            data = self._outputs_now()
        except (ValueError, SolverError) as exc:
            self.sim.done = True
            self.show_error(str(exc))
            return False
        except Exception as exc:  # a bug: stop this run, keep the page, log once
            self.sim.done = True
            log.exception("ReynoldsDashboard frame failed")
            self.show_error(f"Unexpected error ({type(exc).__name__}: {exc}). Details are in the server log.")
            return False
        finally:
            self._lock.release()
        self.push(data)
        return True

    def push(self, data: dict) -> None:
        super().push(data)
        if hasattr(self, "progress"):  # the views exist (they are made on first display)
            self.progress.value = int(data["progress"])
            self._show_flow_views()

    def _show_flow_views(self) -> None:
        flow = self.sim.flow if self.sim else "cavity"
        for name, pane in self._flow_views.items():
            visible = name == flow
            if pane.visible != visible:
                pane.visible = visible

    def views(self) -> list:
        src = {name: self.source(name) for name in ("field", "arrows", "obstacle", "u_profile", "v_profile", "u_ghia",
                                                    "v_ghia", "spectrum", "residual", "energy", "forces")}
        self.progress = pn.indicators.Progress(value=int(self.data["progress"]), max=100, width=500,
                                               bar_color="primary")
        self._flow_views = {
            "cavity": pn.Row(_profile_figure(src["u_profile"], src["u_ghia"], "y", "u", "u along x = 0.5"),
                             _profile_figure(src["v_profile"], src["v_ghia"], "x", "v", "v along y = 0.5"),
                             _history_figure(src["residual"], {"residual": "residual R"}, "steady-state residual",
                                             log=True)),
            "Kolmogorov": pn.Row(_spectrum_figure(src["spectrum"]),
                                 _history_figure(src["energy"], {"energy": "energy", "enstrophy": "enstrophy"},
                                                 "energy and enstrophy", log=True)),
            "cylinder wake": pn.Row(_history_figure(src["forces"], {"lift": "lift C_L"}, "lift coefficient"),
                                    _history_figure(src["forces"], {"drag": "drag C_D"}, "drag coefficient")),
        }
        self._show_flow_views()
        field = _field_figure(src["field"], src["arrows"], src["obstacle"])
        return [pn.Row(field, pn.Column(self.progress, self.text("summary", width=420))), *self._flow_views.values()]

    def __panel__(self):
        layout = super().__panel__()
        # Stream once a page shows it (a served session, or a notebook at once); never for the
        # documents `panel serve --warm` builds, which no browser ever loads.
        pn.state.onload(self._start_streaming)
        return layout

    def _start_streaming(self) -> None:
        if self._callback is None:
            self._callback = pn.state.add_periodic_callback(self.tick, period=PERIOD_MS)


def _field_figure(field, arrows, obstacle) -> pn.pane.Bokeh:
    fig = figure(title="vorticity and velocity", width=560, height=420, match_aspect=True, x_axis_label="x",
                 y_axis_label="y", **_FIGURE)
    mapper = LinearColorMapper(palette=tuple(reversed(RdBu11)), low=-1.0, high=1.0)
    fig.image(image="image", x="x", y="y", dw="dw", dh="dh", source=field, color_mapper=mapper)
    fig.segment("x0", "y0", "x1", "y1", source=arrows, color="black", line_width=1, alpha=0.7)
    fig.circle("x", "y", radius="r", source=obstacle, fill_color="#bbbbbb", line_color="black")
    fig.x_range.range_padding = fig.y_range.range_padding = 0
    return pn.pane.Bokeh(fig)


def _profile_figure(profile, points, coordinate, velocity, title) -> pn.pane.Bokeh:
    across = coordinate == "y"  # u(y) is drawn with y up
    fig = figure(title=title, width=300, height=300, x_axis_label=velocity if across else coordinate,
                 y_axis_label=coordinate if across else velocity, **_FIGURE)
    xy = (velocity, coordinate) if across else (coordinate, velocity)
    fig.line(*xy, source=profile, color=_COLORS[0], line_width=2, legend_label="this run")
    fig.scatter(*xy, source=points, color="black", size=6, marker="circle_x", fill_alpha=0,
                legend_label="Ghia et al. 1982")
    fig.legend.location = "top_left" if across else "bottom_left"
    fig.legend.label_text_font_size = "9pt"
    fig.legend.background_fill_alpha = 0.6
    return pn.pane.Bokeh(fig)


def _spectrum_figure(source) -> pn.pane.Bokeh:
    fig = figure(title="energy spectrum", width=400, height=300, x_axis_type="log", y_axis_type="log",
                 x_axis_label="wavenumber k", y_axis_label="E(k)", **_FIGURE)
    fig.line("k", "E", source=source, color=_COLORS[0], line_width=2, legend_label="this run")
    fig.line("k", "reference", source=source, color="black", line_dash="dashed", legend_label="k^-3 (enstrophy cascade)")
    fig.legend.location = "bottom_left"
    fig.legend.label_text_font_size = "9pt"
    return pn.pane.Bokeh(fig)


def _history_figure(source, series: dict, title: str, *, log: bool = False, width: int = 400) -> pn.pane.Bokeh:
    fig = figure(title=title, width=width, height=300, x_axis_label="t", y_axis_type="log" if log else "linear",
                 **_FIGURE)
    for (column, label), color in zip(series.items(), _COLORS):
        fig.line("t", column, source=source, color=color, line_width=2, legend_label=label)
    fig.legend.location = "top_right"
    fig.legend.label_text_font_size = "9pt"
    return pn.pane.Bokeh(fig)
