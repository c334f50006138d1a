"""Binder builds from binder/ alone: a fresh venv from its files, then every notebook import works."""

import ast
import json
import os
import subprocess
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BINDER = ROOT / "binder"

pytestmark = pytest.mark.slow


def notebook_imports() -> set[str]:
    """Top-level modules imported by any code cell of the course notebooks."""
    names = set()
    for nb in sorted((ROOT / "course").glob("*.ipynb")):
        for cell in json.loads(nb.read_text())["cells"]:
            if cell["cell_type"] != "code":
                continue
            src = "".join(cell["source"])
            src = "\n".join(l for l in src.splitlines() if not l.lstrip().startswith(("%", "!")))
            for node in ast.walk(ast.parse(src)):
                if isinstance(node, ast.Import):
                    names.update(a.name for a in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0:
                    names.add(node.module)
    return names


def test_notebooks_import_something():
    names = notebook_imports()
    assert "solverlab" in {n.split(".")[0] for n in names}, names


def test_fresh_venv_from_binder_files_imports_everything(tmp_path):
    env_dir = tmp_path / "binder-env"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    env = dict(os.environ, PATH=f"{env_dir / 'bin'}:{os.environ['PATH']}",
               SOLVERLAB_CACHE_DIR=str(tmp_path / "jax-cache"))
    env.pop("PYTHONPATH", None)

    def run(*cmd, cwd=ROOT):
        out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
        assert out.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
        return out.stdout

    # repo2docker's order: requirements.txt, then postBuild from the repository root.
    run(py, "-m", "pip", "install", "--quiet", "-r", BINDER / "requirements.txt")
    run("bash", BINDER / "postBuild")
    assert any((tmp_path / "jax-cache").iterdir()), "postBuild did not warm the compilation cache"
    # A normal (non-editable) install: solverlab must come from site-packages, not the checkout.
    where = run(py, "-c", "import solverlab, solverlab.widgets; print(solverlab.__file__)", cwd=tmp_path)
    assert "site-packages" in where, where
    modules = sorted(notebook_imports())
    run(py, "-c", "; ".join(f"import {m}" for m in modules), cwd=tmp_path)
    # The proxy that serves /panel/<name> inside JupyterLab, and panel on PATH for it.
    run(py, "-c", "import jupyter_server_proxy, panel_server", cwd=tmp_path)
    assert (env_dir / "bin" / "panel").exists()
    assert (env_dir / "bin" / "jupyter-lab").exists()
