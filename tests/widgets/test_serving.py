"""How the dashboards are served: ``solverlab serve``, the app files, jupyter-panel-proxy's config."""

from pathlib import Path

import panel
import pytest

from solverlab.widgets import DASHBOARDS, cli

ROOT = Path(__file__).resolve().parents[2]


def test_serve_passes_the_flags_to_panel(monkeypatch):
    served = {}
    monkeypatch.setattr(panel, "serve", lambda apps, **kwargs: served.update(apps=apps, **kwargs))
    argv = ["serve", "--address", "0.0.0.0", "--port", "8123", "--allow-websocket-origin", "lab.example.org",
            "--allow-websocket-origin", "hub.example.org:443", "--show"]
    assert cli.main(argv) == 0
    assert set(served["apps"]) == {"/", *DASHBOARDS}
    assert (served["address"], served["port"], served["show"], served["warm"]) == ("0.0.0.0", 8123, True, True)
    assert {"127.0.0.1:8123", "hub.example.org:443", "lab.example.org", "localhost:8123"} <= set(
        served["websocket_origin"])


def test_serve_defaults_to_this_machine_only(monkeypatch):
    served = {}
    monkeypatch.setattr(panel, "serve", lambda apps, **kwargs: served.update(kwargs))
    cli.main(["serve"])
    assert (served["address"], served["port"], served["show"]) == ("127.0.0.1", 5006, False)
    assert served["websocket_origin"] == ["127.0.0.1:5006", "localhost:5006"]


def test_cli_rejects_a_missing_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([])
    assert exit_info.value.code == 2
    assert "COMMAND" in capsys.readouterr().err


def test_index_links_every_dashboard():
    text = cli.index_page(DASHBOARDS).object
    for name, factory in DASHBOARDS.items():
        assert f"[{name}](./{name})" in text
        assert factory.__doc__.split("\n")[0].strip() in text


def test_every_dashboard_has_an_app_file():
    apps = {path.stem for path in (ROOT / "widgets" / "apps").glob("*.py")}
    assert apps == set(DASHBOARDS)


def test_jupyter_panel_proxy_serves_the_app_files(monkeypatch):
    # jupyter-panel-proxy builds its `panel serve` command from jupyter-panel-proxy.yml in the
    # Jupyter server's working directory (the repository root when the course is launched).
    panel_server = pytest.importorskip("panel_server")
    monkeypatch.chdir(ROOT)
    command = panel_server._launch_command(4321)
    assert command[:2] == ["panel", "serve"]
    apps = sorted(arg for arg in command if arg.endswith((".py", ".ipynb")))
    assert apps == sorted(f"widgets/apps/{name}.py" for name in DASHBOARDS)
    assert "--warm" in command
    assert "--dev" not in command  # no autoreload in a class


def test_listening_on_every_interface_allows_this_hosts_names():
    import socket

    from solverlab.widgets.cli import _origins

    local = _origins("127.0.0.1", 5006, [])
    assert local == ["127.0.0.1:5006", "localhost:5006"]
    everywhere = _origins("0.0.0.0", 8080, ["lab.example.org:8080"])
    assert f"{socket.gethostname()}:8080" in everywhere and "lab.example.org:8080" in everywhere
    assert not any(o.startswith("0.0.0.0") for o in everywhere)
