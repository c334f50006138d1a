"""The step-size dashboard (chapter 02) as a Panel app.

    panel serve widgets/apps/step_size.py           # http://localhost:5006/step_size
    JupyterLab: /panel/step_size                      (jupyter-panel-proxy, see jupyter-panel-proxy.yml)

Panel runs this file once per browser session; the jitted kernels and their warm-up live in the
imported module, so only the first session of a server process compiles.
"""

import solverlab
from solverlab.widgets import StepSizeDashboard

solverlab.setup()  # float32 and the persistent compilation cache
StepSizeDashboard().servable(title="SolverLab: SDE solvers and the step size")
