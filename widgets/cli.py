"""``solverlab serve``: every dashboard in :data:`solverlab.widgets.DASHBOARDS` plus an index page.

    solverlab serve                                    # http://127.0.0.1:5006/
    solverlab serve --address 0.0.0.0 --port 8080 --allow-websocket-origin lab.example.org

The kernels compile once when the server starts (``warm``, with JAX's persistent compilation cache),
and each browser session gets its own dashboard object.
"""

from __future__ import annotations

import argparse
import inspect
import socket
import sys

__all__ = ["main", "index_page"]


def index_page(dashboards: dict):
    """A page linking to each dashboard, with the first line of its docstring."""
    import panel as pn

    lines = ["# SolverLab dashboards", ""]
    for name, factory in dashboards.items():
        summary = (inspect.getdoc(factory) or "").split("\n\n")[0].replace("\n", " ")
        lines.append(f"- [{name}](./{name}): {summary}")
    return pn.pane.Markdown("\n".join(lines), width=800)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="solverlab", description="SolverLab command line.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser("serve", help="serve the dashboards and an index page",
                                description="Serve every SolverLab dashboard and an index page with Panel.")
    serve.add_argument("--address", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1; 0.0.0.0 for a class network)")
    serve.add_argument("--port", type=int, default=5006, help="port to listen on (default 5006)")
    serve.add_argument("--allow-websocket-origin", action="append", default=[], metavar="HOST[:PORT]",
                       help="host allowed to open the websocket, as seen by the browser (repeatable); "
                            "the listening address and localhost are always allowed, and with "
                            "--address 0.0.0.0 also this machine's host name and addresses")
    serve.add_argument("--show", action=argparse.BooleanOptionalAction, default=False,
                       help="open the index page in a browser (default: no)")
    return parser


def _origins(address: str, port: int, extra: list[str]) -> list[str]:
    """Websocket origins to allow: the listening address and localhost, plus, when listening on
    every interface (0.0.0.0 or ::), this machine's host name, FQDN and addresses, so a class can
    reach it as ``http://<host>:<port>``; ``extra`` adds more (e.g. a proxy's public name)."""
    hosts = {address, "localhost", "127.0.0.1"}
    if address in ("0.0.0.0", "::"):
        name = socket.gethostname()
        hosts |= {name, socket.getfqdn()}
        try:
            hosts |= set(socket.gethostbyname_ex(name)[2])
        except OSError:
            pass
    hosts -= {"0.0.0.0", "::", ""}
    return sorted({f"{host}:{port}" for host in hosts} | set(extra))


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``solverlab`` console script."""
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return serve(args.address, args.port, args.allow_websocket_origin, args.show)
    return 2  # unreachable: argparse rejects unknown commands


def serve(address: str, port: int, origins: list[str], show: bool) -> int:
    """Serve the dashboards until interrupted."""
    import panel as pn

    import solverlab
    from solverlab.widgets import DASHBOARDS

    solverlab.setup()  # float32 and the persistent compilation cache
    apps = {"/": lambda: index_page(DASHBOARDS), **DASHBOARDS}
    titles = {"/": "SolverLab", **{name: f"SolverLab: {name}" for name in DASHBOARDS}}
    origins = _origins(address, port, origins)
    print(f"SolverLab dashboards at http://{address}:{port}/ (Ctrl-C to stop); "
          f"websocket origins allowed: {', '.join(origins)}", file=sys.stderr)
    pn.serve(apps, address=address, port=port, websocket_origin=origins,
             show=show, title=titles, warm=True, start=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
