"""The guidance-scale dashboard (chapter 08) as a Panel app.

    panel serve widgets/apps/guidance.py            # http://localhost:5006/guidance
    JupyterLab: /panel/guidance                       (jupyter-panel-proxy, see jupyter-panel-proxy.yml)

Panel runs this file once per browser session; the jitted kernels and their warm-up live in the
imported module, so only the first session of a server process compiles.
"""

import solverlab
from solverlab.widgets import GuidanceDashboard

solverlab.setup()  # float32 and the persistent compilation cache
GuidanceDashboard().servable(title="SolverLab: guidance scale and NFE")
