"""The distribution ships every subpackage, and Binder installs what pyproject.toml asks for."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_every_subpackage_is_listed():
    # package-dir maps solverlab -> core and solverlab.widgets -> widgets; a package missing from the
    # list still works in an editable install but is absent from a normal one (Binder).
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    found = set()
    for top, prefix in (("core", "solverlab"), ("widgets", "solverlab.widgets")):
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / top).parts
            found.add(".".join((prefix, *rel)))
    assert found <= listed, f"add to [tool.setuptools] packages: {sorted(found - listed)}"


def test_binder_requirements_match_the_runtime_dependencies():
    runtime = {_name(r) for r in PYPROJECT["project"]["dependencies"]}
    lines = (ROOT / "binder" / "requirements.txt").read_text().splitlines()
    binder = {_name(l) for l in lines if l.strip() and not l.startswith(("#", "-"))}
    assert binder == runtime


def test_constraints_pin_every_dependency():
    pins = {_name(l) for l in (ROOT / "constraints.txt").read_text().splitlines()
            if l.strip() and not l.startswith("#")}
    wanted = {_name(r) for r in PYPROJECT["project"]["dependencies"]}
    for extra in PYPROJECT["project"]["optional-dependencies"].values():
        wanted |= {_name(r) for r in extra}
    assert wanted <= pins, f"not pinned: {sorted(wanted - pins)}"
