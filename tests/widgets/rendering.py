"""Helpers shared by the dashboard tests."""

import panel as pn
from bokeh.models import ColumnDataSource


def rendered_sources(dashboard) -> dict[str, ColumnDataSource]:
    """Render the dashboard to Bokeh models, as a page would, and return its data sources by name."""
    root = pn.panel(dashboard).get_root()
    sources = {}
    for cds in root.select({"type": ColumnDataSource}):
        if cds.name:
            assert cds.name not in sources, f"two sources named {cds.name}"
            sources[cds.name] = cds
    return sources
