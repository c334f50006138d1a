"""Drive served Panel apps in headless Chromium: one harness for ``tests/browser`` and the benchmarks.

Usage::

    with panel_server(APP_FILE) as server, chromium() as browser:
        page = open_app(browser, server.url("brownian_tree"))
        before = data_signature(page)
        press(slider_handle(page, "seed"), "ArrowRight")
        wait_for_data_change(page, before)

* :func:`panel_server` runs ``panel serve --warm`` on a free 127.0.0.1 port in a subprocess, waits
  until the apps answer, and stops it afterwards (its log is attached to any start-up error);
  :func:`server_process` does the same for any server command (``solverlab serve``).
* :func:`chromium` launches the Debian ``/usr/bin/chromium`` headless through Playwright's sync API;
  :func:`chromium_missing` says why that cannot work here (tests skip with that reason).
* Plot updates are observed through the Bokeh document in the page: :func:`data_signature` digests
  every ``ColumnDataSource``'s data, and :func:`wait_for_data_change` waits with a synchronous
  predicate until it differs. :func:`install_probe` timestamps key presses and data arrivals inside
  the page, for latency measurements free of the driver's round trips.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Iterator, Sequence

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# A digest of the data of every ColumnDataSource in the page's Bokeh document: ids, column names,
# lengths and sums. Synchronous, so it can serve as a wait_for_function predicate.
_SIGNATURE_JS = """
() => {
  if (!(window.Bokeh && Bokeh.documents.length)) return null;
  const parts = [];
  for (const model of Bokeh.documents[0].all_models) {
    if (model.type !== "ColumnDataSource") continue;
    const data = model.data instanceof Map ? model.data : new Map(Object.entries(model.data));
    for (const [name, column] of data) {
      let sum = 0;
      for (const x of column) if (typeof x === "number" && Number.isFinite(x)) sum += x;
      parts.push(`${model.id}.${name}:${column.length}:${sum.toPrecision(12)}`);
    }
  }
  return parts.sort().join("|");
}
"""

# The page is ready for input once Bokeh has rendered the document, it is idle, and it holds plot data.
_READY_JS = """
() => window.Bokeh !== undefined && Bokeh.documents.length > 0 && Bokeh.documents[0].is_idle
      && [...Bokeh.documents[0].all_models].some((m) => m.type === "ColumnDataSource")
"""

# Timestamps, in the page's clock, of the last key press and of every data update after it
# ("data": the ColumnDataSource changed; "frame": the next animation frame, i.e. painted).
_PROBE_JS = """
() => {
  const probe = {key: null, data: [], frame: []};
  window.__solverlab_probe = probe;
  document.addEventListener("keydown", () => {
    probe.key = performance.now(); probe.data = []; probe.frame = [];
  }, true);
  Bokeh.documents[0].on_change((event) => {
    if (event.attr !== "data" || probe.key === null) return;
    probe.data.push(performance.now());
    requestAnimationFrame(() => probe.frame.push(performance.now()));
  });
}
"""


def chromium_missing() -> str | None:
    """Why headless Chromium cannot run here (None when it can)."""
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} not found (install Debian's chromium package)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install playwright)"
    return None


def chromium_version() -> str:
    """The version Chromium reports, e.g. "156.0.8078.108"."""
    out = subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True, check=False).stdout
    return out.split()[1] if len(out.split()) > 1 else "unknown"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclasses.dataclass
class PanelServer:
    """A server subprocess listening on 127.0.0.1:``port``, with its log."""

    port: int
    process: subprocess.Popen
    log_path: Path

    def url(self, app: str = "") -> str:
        return f"http://127.0.0.1:{self.port}/{app}"

    def log(self, tail: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-tail:]


@contextlib.contextmanager
def panel_server(*apps: str | os.PathLike, args: Sequence[str] = (), timeout: float = 180.0) -> Iterator[PanelServer]:
    """Serve ``apps`` (Panel app files) with ``panel serve --warm`` on a free port; stop on exit.

    Waits until every app answers HTTP 200 (``--warm`` has run each app once by then, so the
    kernels are compiled), or raises ``RuntimeError`` with the server's log.
    """

    def command(port: int) -> list[str]:
        return [
            sys.executable, "-m", "panel", "serve", *map(str, apps),
            "--address", "127.0.0.1", "--port", str(port),
            "--allow-websocket-origin", f"127.0.0.1:{port}",
            "--warm", *args,
        ]

    with server_process(command, [Path(app).stem for app in apps], timeout=timeout) as server:
        yield server


@contextlib.contextmanager
def server_process(command: Callable[[int], list[str]], paths: Sequence[str], *,
                   timeout: float = 180.0) -> Iterator[PanelServer]:
    """Run ``command(port)`` (a server on 127.0.0.1:port) from the repository root; stop it on exit.

    Waits until each of ``paths`` answers HTTP 200, or raises ``RuntimeError`` with the server's log.
    """
    port = free_port()
    log_dir = Path(tempfile.mkdtemp(prefix="solverlab-server-"))
    log_path = log_dir / "server.log"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command(port), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    server = PanelServer(port, process, log_path)
    try:
        deadline = time.monotonic() + timeout
        for path in paths:
            _wait_until_served(server, path, deadline)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(log_dir, ignore_errors=True)


def _wait_until_served(server: PanelServer, app: str, deadline: float) -> None:
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(f"the server exited with code {server.process.returncode}:\n{server.log()}")
        try:
            with urllib.request.urlopen(server.url(app), timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the server did not serve /{app} in time:\n{server.log()}")
        time.sleep(0.25)


@contextlib.contextmanager
def chromium():
    """Headless Debian Chromium through Playwright's sync API."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def open_app(browser, url: str, *, width: int = 1200, height: int = 1000, timeout_ms: float = 60_000):
    """Open ``url`` in a new page and wait until its plots are drawn (see :func:`wait_until_ready`)."""
    page = browser.new_page(viewport={"width": width, "height": height})
    page.goto(url)
    wait_until_ready(page, timeout_ms=timeout_ms)
    return page


def wait_until_ready(page, *, timeout_ms: float = 60_000) -> None:
    """Wait until the page's Bokeh document is rendered and idle and a plot canvas is visible."""
    page.wait_for_function(_READY_JS, timeout=timeout_ms)
    page.locator(".bk-Canvas").first.wait_for(state="visible", timeout=timeout_ms)


def data_signature(page) -> str:
    """Digest of all ColumnDataSource data in the page (changes when any plot's data changes)."""
    return page.evaluate(_SIGNATURE_JS)


def wait_for_data_change(page, before: str, *, timeout_ms: float = 15_000) -> str:
    """Wait until :func:`data_signature` differs from ``before``; return the new signature."""
    page.wait_for_function(f"(before) => ({_SIGNATURE_JS})() !== before", arg=before, polling="raf",
                           timeout=timeout_ms)
    return data_signature(page)


def source_data(page, name: str) -> dict[str, list]:
    """The columns of the page's ColumnDataSource called ``name`` (plain lists; NaN stays NaN)."""
    return page.evaluate(
        """(name) => {
          const source = Bokeh.documents[0].get_model_by_name(name);
          if (source === null) throw new Error(`no model named ${name}`);
          const data = source.data instanceof Map ? source.data : new Map(Object.entries(source.data));
          return Object.fromEntries([...data].map(([key, column]) => [key, Array.from(column)]));
        }""",
        name,
    )


def slider_handle(page, title: str, which: str = ""):
    """The handle of the slider whose title contains ``title`` (``which``: "lower"/"upper" for ranges).

    A Panel ``DiscreteSlider`` draws its title in a separate label: then the slider is the one inside
    the innermost layout column that holds that label.
    """
    handle = f".noUi-handle{'-' + which if which else ''}"
    widget = page.locator(".bk-Slider, .bk-RangeSlider").filter(has_text=title)
    if widget.count() == 0:
        label = page.locator(".bk-clearfix", has_text=title)
        widget = page.locator(".bk-panel-models-layout-Column").filter(has=label).last
    return widget.locator(handle)


def press(handle, key: str) -> None:
    """Focus a slider handle and press ``key`` (ArrowRight, ArrowLeft, Home, End, ...)."""
    handle.focus()
    handle.press(key)


def install_probe(page) -> None:
    """Start timestamping key presses and data updates inside ``page`` (see :func:`probe_latency`)."""
    page.evaluate(_PROBE_JS)


def probe_latency(page, *, settle_ms: float = 250.0, timeout_ms: float = 15_000) -> tuple[float, float]:
    """After a key press: wait for its data updates to arrive and settle; return latencies in ms.

    Returns ``(data, frame)``: from the key press to the last ColumnDataSource update it caused, and
    to the animation frame after that update (the plot is painted).
    """
    page.wait_for_function("() => window.__solverlab_probe.frame.length > 0", polling="raf", timeout=timeout_ms)
    page.wait_for_timeout(settle_ms)  # later messages of the same move arrive well within this
    probe = page.evaluate("() => window.__solverlab_probe")
    return probe["data"][-1] - probe["key"], probe["frame"][-1] - probe["key"]
