"""SolverLab dashboards: one ``param`` class per chapter, served by ``solverlab serve``.

:data:`DASHBOARDS` maps a URL name to a callable that builds a fresh dashboard (one per browser
session); ``solverlab serve`` serves them all with an index page, and each one also has an app file
under ``widgets/apps/`` for plain ``panel serve`` and for ``/panel/<name>`` inside JupyterLab.
"""

from ._base import Dashboard
from .brownian_tree import BrownianTreeDashboard

__all__ = ["Dashboard", "BrownianTreeDashboard", "DASHBOARDS"]

#: URL name -> callable returning a servable dashboard (a Panel ``Viewer``).
DASHBOARDS = {
    "brownian_tree": BrownianTreeDashboard,
}
