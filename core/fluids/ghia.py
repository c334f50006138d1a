"""Ghia, Ghia & Shin (1982): the lid-driven cavity's centreline velocities, the benchmark everyone uses.

Ghia, U., Ghia, K. N. & Shin, C. T. (1982), "High-Re solutions for incompressible flow using the
Navier-Stokes equations and a multigrid method", J. Comput. Phys. 48, 387-411: Table I (``u`` along the
vertical centreline :math:`x = 1/2`), Table II (``v`` along the horizontal centreline :math:`y = 1/2`) and
Table III (the primary vortex), lid speed 1 at :math:`y = 1`, computed on a :math:`129 \\times 129` grid
(second-order multigrid; accurate to about 1% of the lid speed). The Re = 100 and 400 columns are the
project's shared reference data (``shared/data``, transcribed from the paper); the Re = 1000 columns and
Table III were typed from two public transcriptions that agree with each other
(Kandil2001/LidCavity_Solver_Comparison, ``c/serial/postprocess/plot_results.py``, and
prism-engines/prism, ``domains/fluid/benchmark_ghia.py``).

One value is suspect: Table II at Re = 400, :math:`x = 0.9063` (:math:`v = -0.23827`) breaks the
monotone run of its own column, and converged solutions give about :math:`-0.38` there; it is kept as
published and named in :data:`SUSPECT`, so comparisons can leave it out.
"""

from __future__ import annotations

import csv
import functools
from importlib import resources

import numpy as np

__all__ = ["REYNOLDS", "PRIMARY_VORTEX", "SUSPECT", "centerline_u", "centerline_v"]

#: Reynolds numbers whose centreline columns are shipped.
REYNOLDS = (100, 400, 1000)
#: Table III: the primary vortex's ``(psi_min, x, y)``.
PRIMARY_VORTEX = {100: (-0.103423, 0.6172, 0.7344), 400: (-0.113909, 0.5547, 0.6055),
                  1000: (-0.117929, 0.5313, 0.5625)}
#: Reynolds number -> the coordinate of a suspect centreline value (see the module docstring).
SUSPECT = {400: ("v", 0.9063)}

_FILES = {("u", 100): "ghia1982_u_re100_re400.csv", ("u", 400): "ghia1982_u_re100_re400.csv",
          ("v", 100): "ghia1982_v_re100_re400.csv", ("v", 400): "ghia1982_v_re100_re400.csv",
          ("u", 1000): "ghia1982_u_re1000.csv", ("v", 1000): "ghia1982_v_re1000.csv"}


@functools.cache
def _table(name: str) -> dict[str, np.ndarray]:
    with resources.files(__package__).joinpath("data", name).open() as f:
        rows = list(csv.reader(f))
    header, values = rows[0], np.array(rows[1:], dtype=float)
    return {column: values[:, i] for i, column in enumerate(header)}


def _column(component: str, reynolds) -> tuple[np.ndarray, np.ndarray]:
    if reynolds not in REYNOLDS:
        raise ValueError(f"reynolds must be one of {', '.join(map(str, REYNOLDS))} (Ghia's tabulated "
                         f"values shipped here), got {reynolds!r}")
    table = _table(_FILES[component, int(reynolds)])
    coordinate = "y" if component == "u" else "x"
    return table[coordinate].copy(), table[f"Re{int(reynolds)}"].copy()


def centerline_u(reynolds) -> tuple[np.ndarray, np.ndarray]:
    """Ghia's ``(y, u)`` along :math:`x = 1/2` at ``reynolds`` (17 points, walls included, y ascending)."""
    return _column("u", reynolds)


def centerline_v(reynolds) -> tuple[np.ndarray, np.ndarray]:
    """Ghia's ``(x, v)`` along :math:`y = 1/2` at ``reynolds`` (17 points, walls included, x ascending)."""
    return _column("v", reynolds)
