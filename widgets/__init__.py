"""SolverLab dashboards: one ``param`` class per chapter, served by ``solverlab serve``.

:data:`DASHBOARDS` maps a URL name to a callable that builds a fresh dashboard (one per browser
session); ``solverlab serve`` serves them all with an index page, and each one also has an app file
under ``widgets/apps/`` for plain ``panel serve`` and for ``/panel/<name>`` inside JupyterLab.

Adding a dashboard (see :mod:`._base` for the pattern, :mod:`.brownian_tree` for an example):

1. ``widgets/<name>.py``: jitted kernels with traced scalar arguments and fixed shapes, a cached
   ``warm_up_kernels()``, and a :class:`Dashboard` subclass;
2. register it in :data:`DASHBOARDS` below;
3. ``widgets/apps/<name>.py``: import it, ``solverlab.setup()``, ``Dashboard().servable()``;
4. ``tests/widgets/``: parameters in, plot data and messages out, no recompiles after warm-up.
"""

from ._base import Dashboard
from .brownian_tree import BrownianTreeDashboard
from .guidance import GuidanceDashboard
from .hurst import HurstDashboard
from .reynolds import ReynoldsDashboard
from .step_size import StepSizeDashboard

__all__ = ["Dashboard", "BrownianTreeDashboard", "StepSizeDashboard", "HurstDashboard", "GuidanceDashboard", "ReynoldsDashboard",
           "DASHBOARDS"]

#: URL name -> callable returning a servable dashboard (a Panel ``Viewer``).
DASHBOARDS = {
    "brownian_tree": BrownianTreeDashboard,
    "step_size": StepSizeDashboard,
    "hurst": HurstDashboard,
    "guidance": GuidanceDashboard,
    "reynolds": ReynoldsDashboard,
}
