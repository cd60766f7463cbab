"""Every third-party module the shipped packages import is a declared runtime dependency.

The README's first command installs keylife without the dev extras, so a module that only a dev
tool brings in (sortedcontainers came through hypothesis) works in the test venv and fails for
a newcomer. ``.ci/newcomer`` proves the command end to end; this names the module at once.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ("keylife", "audit_forwarder", "exporter")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared(section: list[str]) -> set[str]:
    return {_norm(re.split(r"[\s;\[<>=!~]", spec, maxsplit=1)[0]) for spec in section}


def _imports(package: str) -> dict[str, str]:
    """Top-level module -> one file that imports it, for every absolute import in the package."""
    found: dict[str, str] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                found.setdefault(name.split(".")[0], str(path.relative_to(ROOT)))
    return found


def test_every_import_of_the_shipped_packages_is_a_declared_runtime_dependency():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = _declared(meta["dependencies"])
    owners = packages_distributions()
    local = {p.name for p in ROOT.iterdir() if (p / "__init__.py").exists()}
    undeclared = []
    for package in SHIPPED:
        for top, where in _imports(package).items():
            if top in sys.stdlib_module_names or top in local or top == "__future__":
                continue
            dists = {_norm(d) for d in owners.get(top, [top])}
            if not dists & runtime:
                undeclared.append(f"{top} (imported in {where}; installed by {sorted(dists)})")
    assert not undeclared, "imported but not in [project] dependencies: " + "; ".join(undeclared)


def test_the_check_sees_a_dev_only_module_as_undeclared():
    """The check can fail: hypothesis is installed here, but only as a dev extra."""
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    dists = {_norm(d) for d in packages_distributions()["hypothesis"]}
    assert not dists & _declared(meta["dependencies"])
    assert dists & _declared(meta["optional-dependencies"]["dev"])
