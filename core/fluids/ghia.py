"""Ghia, Ghia & Shin (1982): the lid-driven cavity's centreline velocities, the benchmark everyone uses.

Ghia, U., Ghia, K. N. & Shin, C. T. (1982), "High-Re solutions for incompressible flow using the
Navier-Stokes equations and a multigrid method", J. Comput. Phys. 48, 387-411: Table I (``u`` along the
vertical centreline :math:`x = 1/2`) and Table II (``v`` along the horizontal centreline
:math:`y = 1/2`), lid speed 1 at :math:`y = 1`, computed on a :math:`129 \\times 129` grid (second-order
multigrid; accurate to about 1% of the lid speed). The values are transcribed in ``data/`` (the
project's shared reference data, with this source).
"""

from __future__ import annotations

import csv
import functools
from importlib import resources

import numpy as np

__all__ = ["REYNOLDS", "centerline_u", "centerline_v"]

#: Reynolds numbers whose columns are shipped.
REYNOLDS = (100, 400)


@functools.cache
def _table(name: str) -> dict[str, np.ndarray]:
    with resources.files(__package__).joinpath("data", name).open() as f:
        rows = list(csv.reader(f))
    header, values = rows[0], np.array(rows[1:], dtype=float)
    return {column: values[:, i] for i, column in enumerate(header)}


def _column(name: str, coordinate: str, reynolds) -> tuple[np.ndarray, np.ndarray]:
    if reynolds not in REYNOLDS:
        raise ValueError(f"reynolds must be one of {', '.join(map(str, REYNOLDS))} (Ghia's tabulated "
                         f"values shipped here), got {reynolds!r}")
    table = _table(name)
    return table[coordinate].copy(), table[f"Re{int(reynolds)}"].copy()


def centerline_u(reynolds) -> tuple[np.ndarray, np.ndarray]:
    """Ghia's ``(y, u)`` along :math:`x = 1/2` at ``reynolds`` (17 points, walls included)."""
    return _column("ghia1982_u_re100_re400.csv", "y", reynolds)


def centerline_v(reynolds) -> tuple[np.ndarray, np.ndarray]:
    """Ghia's ``(x, v)`` along :math:`y = 1/2` at ``reynolds`` (17 points, walls included)."""
    return _column("ghia1982_v_re100_re400.csv", "x", reynolds)
