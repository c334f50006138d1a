"""The framework floor for ``latency.py``: a slider and a HoloViews curve that does almost nothing.

Same update path as the dashboards (a DynamicMap redrawn in place on a slider move), no compute.
"""

import holoviews as hv
import numpy as np
import panel as pn

slider = pn.widgets.IntSlider(name="x", start=0, end=1000, value=0)


def curve(x):
    return hv.Curve((np.arange(10.0), np.full(10, float(x))), "i", "x").opts(width=500, height=250, ylim=(0, 1000))


pn.Row(slider, hv.DynamicMap(pn.bind(curve, slider))).servable(title="floor")
