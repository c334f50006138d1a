"""The Hurst-index dashboard (chapter 03) as a Panel app.

    panel serve widgets/apps/hurst.py               # http://localhost:5006/hurst
    JupyterLab: /panel/hurst                          (jupyter-panel-proxy, see jupyter-panel-proxy.yml)

Panel runs this file once per browser session; the jitted kernels and their warm-up live in the
imported module, so only the first session of a server process compiles.
"""

import solverlab
from solverlab.widgets import HurstDashboard

solverlab.setup()  # float32 and the persistent compilation cache
HurstDashboard().servable(title="SolverLab: the Hurst index")
