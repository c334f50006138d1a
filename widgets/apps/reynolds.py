"""The Reynolds-number dashboard (chapter 12) as a Panel app.

    panel serve widgets/apps/reynolds.py            # http://localhost:5006/reynolds
    JupyterLab: /panel/reynolds                       (jupyter-panel-proxy, see jupyter-panel-proxy.yml)

Panel runs this file once per browser session; the jitted kernels and their warm-up live in the
imported module, so only the first session of a server process compiles.
"""

import solverlab
from solverlab.widgets import ReynoldsDashboard

solverlab.setup()  # float32 and the persistent compilation cache
ReynoldsDashboard().servable(title="SolverLab: the Reynolds number")
