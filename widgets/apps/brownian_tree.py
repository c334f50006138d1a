"""The Virtual Brownian Tree dashboard as a Panel app.

    panel serve widgets/apps/brownian_tree.py       # http://localhost:5006/brownian_tree
    JupyterLab: /panel/brownian_tree                  (jupyter-panel-proxy, see jupyter-panel-proxy.yml)

Panel runs this file once per browser session; the jitted kernels and their warm-up live in the
imported module, so only the first session of a server process compiles.
"""

import solverlab
from solverlab.widgets import BrownianTreeDashboard

solverlab.setup()  # float32 and the persistent compilation cache
BrownianTreeDashboard().servable(title="SolverLab: Virtual Brownian Tree")
