"""The pattern every SolverLab dashboard follows.

A dashboard is one :class:`Dashboard` subclass (a ``param.Parameterized``, through Panel's
``Viewer``) with

* typed, bounded parameters: the bounds are the validation, and Panel turns them into widgets;
* :meth:`Dashboard.warm_up`: compiles the jitted kernels before the first slider move. Subclasses
  delegate to a cached module-level function, so only the first instance in a process pays (``panel
  serve`` builds one instance per browser session);
* :meth:`Dashboard.compute`: checks the parameters (``ValueError`` naming what is wrong), calls the
  jitted kernels with fixed-dtype arguments and returns named outputs: a dict of NumPy columns for
  each plot's data, or a string for a text pane;
* :meth:`Dashboard.views`: Bokeh figures drawing from :meth:`Dashboard.source` (a
  ``ColumnDataSource`` per named output) and text from :meth:`Dashboard.text`.

A parameter change runs :meth:`compute` once and assigns the new columns to the existing
ColumnDataSources (one message to the browser, plots updated in place; axes follow the data in
the browser). This is the "update the ColumnDataSource" route of design.md section 9: on a 2-core
machine, redrawing HoloViews DynamicMaps cost 25-30 ms of server time per plot per move, which
alone broke the latency target (``benchmarks/latency.py``), while assigning columns costs well under
a millisecond.

When :meth:`compute` raises, the page shows the message in an alert and keeps the last good plots;
``ValueError`` and :class:`solverlab.SolverError` are expected and shown as they are, anything else
is logged with its traceback and shown as an unexpected error.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import panel as pn
from bokeh.models import ColumnDataSource

from solverlab import SolverError

__all__ = ["Dashboard"]

log = logging.getLogger("solverlab.widgets")


class Dashboard(pn.viewable.Viewer):
    """Base class: parameters in; plot data, text and an alert out.

    Subclasses set :attr:`title`, :attr:`description`, :attr:`kernels` and :attr:`widgets`, and implement
    :meth:`compute` and :meth:`views` (and usually :meth:`warm_up`).
    """

    #: Heading shown above the controls, and a few sentences under it (Markdown).
    title: str = "Dashboard"
    description: str = ""
    #: The jitted functions behind the plots; :meth:`compile_count` sums their compile caches.
    kernels: Sequence = ()
    #: Widget overrides for ``pn.Param`` (parameter name -> widget type or dict of options).
    widgets: dict = {}
    #: ``param.Action`` parameters shown as buttons under the controls (they act; nothing watches them).
    actions: Sequence[str] = ()

    def __init__(self, **params):
        super().__init__(**params)
        self.alert = pn.pane.Alert("", alert_type="danger", visible=False, sizing_mode="stretch_width")
        self._outputs: list[tuple[str, Any]] = []  # (output name, ColumnDataSource or text pane)
        self.warm_up()
        # The first compute runs at construction, so bad initial values raise here, at the
        # Python boundary, like any other invalid argument.
        self.data: dict[str, Any] = self.compute()
        self.param.watch(self.refresh, self.controls())

    # -- the contract for subclasses ------------------------------------------------------------
    def warm_up(self) -> None:
        """Compile every kernel variant the controls can reach (called once per instance)."""

    def compute(self) -> dict[str, Any]:
        """Validate the parameters, run the kernels, return ``{name: columns dict or text}``."""
        raise NotImplementedError

    def views(self) -> list:
        """The figures and text panes, drawing from :meth:`source` and :meth:`text`."""
        raise NotImplementedError

    # -- building blocks for views() ------------------------------------------------------------
    def source(self, name: str) -> ColumnDataSource:
        """A new ``ColumnDataSource`` holding output ``name`` (also its Bokeh name), kept up to date.

        Call it once per output in :meth:`views` and share the source between figures.
        """
        cds = ColumnDataSource(self.data[name], name=name)
        self._outputs.append((name, cds))
        return cds

    def text(self, name: str, **kwargs) -> pn.pane.Markdown:
        """A Markdown pane showing output ``name`` (a string), kept up to date on every change."""
        pane = pn.pane.Markdown(self.data[name], **kwargs)
        self._outputs.append((name, pane))
        return pane

    # -- shared machinery -----------------------------------------------------------------------
    def controls(self) -> list[str]:
        """Names of the parameters whose changes recompute the outputs (all but ``name`` and the actions)."""
        return [p for p in self.param if p != "name" and p not in self.actions]

    def refresh(self, *events) -> bool:
        """Recompute and push the new outputs to the page; on failure show the alert instead.

        Returns True when the outputs were updated.
        """
        try:
            data = self.compute()
        except (ValueError, SolverError) as exc:
            log.info("%s: %s", type(self).__name__, exc)
            self.show_error(str(exc))
            return False
        except Exception as exc:  # a bug, not a bad input: keep the page alive and log it
            log.exception("%s failed to update", type(self).__name__)
            self.show_error(f"Unexpected error ({type(exc).__name__}: {exc}). Details are in the server log.")
            return False
        self.push(data)
        return True

    def push(self, data: dict[str, Any]) -> None:
        """Send ``data`` (outputs as :meth:`compute` returns them) to the page, skipping unchanged ones.

        :meth:`refresh` calls it after a parameter change; a streaming dashboard also calls it for
        each new frame.
        """
        previous, self.data = self.data or {}, data
        # One message to the browser for all outputs. (Assigning columns and text adds no models,
        # so Bokeh recomputes nothing; hold(freeze=True) would force one full recompute.)
        with pn.io.hold():
            self.alert.visible = False
            for name, output in self._outputs:
                new = data[name]
                if new is previous.get(name) or (isinstance(new, str) and new == previous.get(name)):
                    continue  # unchanged (a cached piece comes back as the same object): nothing to send
                if isinstance(output, ColumnDataSource):
                    output.data = new
                else:
                    output.object = new
        if data.get("problem"):  # drawn, with something to say (e.g. some samples not finite)
            self.show_error(data["problem"])

    def show_error(self, message: str) -> None:
        """Show ``message`` in the page's alert (the plots keep their last good state)."""
        self.alert.object = message
        self.alert.visible = True

    def compile_count(self) -> int:
        """How many compiled variants the kernels hold; constant once warmed up."""
        return sum(kernel._cache_size() for kernel in self.kernels)

    def __panel__(self):
        controls = pn.Param(
            self.param,
            parameters=[*self.controls(), *self.actions],
            widgets=self.widgets,
            show_name=False,
            width=300,
        )
        sidebar = pn.Column(f"## {self.title}", controls, pn.pane.Markdown(self.description, width=290), width=320)
        return pn.Row(sidebar, pn.Column(self.alert, *self.views()))
