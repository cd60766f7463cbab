"""Every import points down: the layers of docs/architecture.md, checked on the source with ``ast``.

From the bottom: ``keylife.common``; then the domain (``keylife.domain``), the journal
(``keylife.journal``) and the configuration's sections (``keylife.config``); the registry; the
write path (``keylife.ingest``); the API, the DataFold sources and the demo; and on top the
composition root, ``keylife.cli``, the only part of ``keylife`` that imports ``exporter`` or
``audit_forwarder``. ``audit_forwarder`` reads the journal only through its public reader
(``keylife.journal.reader``) and may use ``keylife.common``; ``exporter`` may use the domain and the
registry below it, never the forwarder or anything above the registry.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("keylife", "audit_forwarder", "exporter")

# keylife's layers, bottom first. A module may import its own package and any lower layer, never a
# peer of its own layer nor a layer above it. ``keylife`` itself (``__version__``) is below everything.
LAYERS: list[tuple[str, ...]] = [
    ("keylife.common",),
    ("keylife.domain", "keylife.journal", "keylife.config"),
    ("keylife.registry", "keylife.witness"),
    ("keylife.ingest",),
    ("keylife.response",),
    ("keylife.api", "keylife.datafold", "keylife.demo"),
    ("keylife.cli",),
]
JOURNAL_PUBLIC = ("keylife.journal.reader",)  # what audit_forwarder may import from the journal
FORWARDER_MAY_USE = ("keylife.common",)  # besides the public reader: small shared lower-layer pieces
EXPORTER_MAY_USE = ("keylife.common", "keylife.domain", "keylife.registry")


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _layer(name: str) -> tuple[int, str] | None:
    for rank, packages in enumerate(LAYERS):
        for package in packages:
            if _within(name, package):
                return rank, package
    return None


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_modules() -> dict[str, str]:
    """Every module of the three packages: dotted name -> source."""
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            out[module_name(path)] = path.read_text()
    return out


def imported(module: str, source: str, known: set[str]) -> list[tuple[int, str]]:
    """(line, module) for every import in ``source``, at any depth (function bodies too).

    ``from a import b`` names ``a.b`` when that is a module, else ``a``; relative imports are resolved
    against ``module``.
    """
    tree = ast.parse(source)
    is_package = module in known and any(k.startswith(module + ".") for k in known)
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = module.split(".") if is_package else module.split(".")[:-1]
                parent = parent[: len(parent) - (node.level - 1)]
                base = ".".join([*parent, base] if base else parent)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                out.append((node.lineno, full if full in known else base))
    return out


def violations(modules: dict[str, str], known: set[str] | None = None) -> list[str]:
    known = set(modules) | (known or set())
    found = []
    for module, source in sorted(modules.items()):
        for line, target in imported(module, source, known):
            why = _refused(module, target)
            if why:
                found.append(f"{module}:{line} imports {target}: {why}")
    return found


def _refused(module: str, target: str) -> str | None:
    top = target.split(".")[0]
    if top not in PACKAGES:
        return None  # the standard library or a third-party package
    if _within(module, "keylife"):
        if top in ("exporter", "audit_forwarder") and not _within(module, "keylife.cli"):
            return "only keylife.cli (the composition root) imports exporter and audit_forwarder"
        if top != "keylife" or target == "keylife":
            return None
        mine, theirs = _layer(module), _layer(target)
        if mine is None or theirs is None:
            return None if module == "keylife" else f"{module if mine is None else target} is in no layer"
        if mine[1] == theirs[1]:
            return None  # within one package
        if theirs[0] >= mine[0]:
            return f"{theirs[1]} is not below {mine[1]}"
        return None
    if _within(module, "audit_forwarder"):
        if top == "exporter":
            return "the forwarder does not import the exporter"
        if top == "keylife":
            if any(_within(target, p) for p in (*JOURNAL_PUBLIC, *FORWARDER_MAY_USE)):
                return None
            return "the forwarder reads the journal only through keylife.journal.reader (and may use keylife.common)"
        return None
    if _within(module, "exporter"):
        if top == "audit_forwarder":
            return "the exporter does not import the forwarder"
        if top == "keylife" and target != "keylife" and not any(_within(target, p) for p in EXPORTER_MAY_USE):
            return "the exporter uses only keylife's lower layers (common, domain, registry)"
    return None


def test_every_import_points_down():
    found = violations(source_modules())
    assert not found, "imports that point the wrong way:\n" + "\n".join(found)


def test_every_keylife_module_is_in_a_layer():
    lost = [m for m in source_modules() if _within(m, "keylife") and m != "keylife" and _layer(m) is None]
    assert not lost, f"modules in no layer (add them to LAYERS and docs/architecture.md): {lost}"


KNOWN = {
    "keylife",
    "keylife.common.backoff",
    "keylife.domain.events",
    "keylife.journal",
    "keylife.journal.reader",
    "keylife.journal.writer",
    "keylife.journal.segments",
    "keylife.registry.projection",
    "keylife.ingest.ledger",
    "keylife.api.app",
    "keylife.cli",
    "keylife.cli.runtime",
    "keylife.demo.network",
    "keylife.datafold.sinks",
    "exporter.collectors",
    "audit_forwarder.shipper.backoff",
}


@pytest.mark.parametrize(
    ("module", "source", "fragment"),
    [
        ("keylife.ingest.ledger", "from exporter.collectors import family", "only keylife.cli"),
        ("keylife.config", "from audit_forwarder.shipper.sink_types import SinkConfig", "only keylife.cli"),
        ("keylife.datafold.sinks", "import audit_forwarder.shipper.backoff", "only keylife.cli"),
        ("keylife.api.app", "def f():\n    from keylife.cli.runtime import Runtime\n", "keylife.cli is not below"),
        ("keylife.api.app", "from keylife.cli import runtime", "keylife.cli is not below"),
        ("keylife.domain.events", "from keylife.api.app import create_app", "keylife.api is not below"),
        ("keylife.domain.events", "from keylife.journal import writer", "keylife.journal is not below"),
        ("keylife.journal.writer", "from keylife.ingest.ledger import Ledger", "keylife.ingest is not below"),
        ("keylife.datafold.sinks", "from keylife.api.app import create_app", "keylife.api is not below"),
        ("keylife.demo.network", "from keylife.datafold import sinks", "keylife.datafold is not below"),
        ("audit_forwarder.shipper.tail", "from keylife.journal import segments", "only through keylife.journal.reader"),
        ("audit_forwarder.shipper.tail", "from keylife.journal.writer import Entry", "only through"),
        ("audit_forwarder.shipper.tail", "import keylife.ingest.ledger", "only through"),
        ("audit_forwarder.formats", "from keylife.cli import runtime", "only through"),
        ("exporter.standalone", "from keylife.cli.runtime import Runtime", "lower layers"),
        ("exporter.docs", "from audit_forwarder.shipper import metrics", "does not import the forwarder"),
        ("keylife.journal.tail", "from . import writer\nfrom ..ingest import ledger", "keylife.ingest is not below"),
    ],
)
def test_a_wrong_way_import_is_caught(module, source, fragment):
    (found,) = violations({module: source}, KNOWN)
    assert fragment in found, found


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("keylife.cli.runtime", "from exporter.service import Exporter\nfrom audit_forwarder.shipper import service"),
        ("keylife.cli.main", "from keylife.demo.network import run_live"),
        ("keylife.api.app", "from keylife.ingest.ledger import Ledger\nfrom keylife import __version__"),
        ("keylife.registry.projection", "from keylife.journal.writer import Entry\nfrom keylife.domain import events"),
        ("audit_forwarder.shipper.tail", "from keylife.journal.reader import EntryTail"),
        ("audit_forwarder.shipper.settings", "from keylife.common.secret_files import check_secret_file"),
        ("exporter.fleet", "from keylife.registry.projection import ProjectionDelta"),
        ("keylife.journal.writer", "import os\nimport orjson\nfrom keylife.journal import segments"),
    ],
)
def test_an_import_that_points_down_passes(module, source):
    assert violations({module: source}, KNOWN) == []
