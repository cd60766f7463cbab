"""docs/forwarding.md states the code's defaults: every row of its settings tables, for every sink
type, against the pydantic models, and every "`setting` (value)" in its prose.

The duplicate bound after a crash is stated in terms of ``batch_max_records``: a wrong default in
the doc (it said 1000 while the code used 5000) misstates what an operator must deduplicate.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from audit_forwarder.shipper.settings import SinkSettings, TlsClientSettings
from audit_forwarder.shipper.sink_types import SinkConfig

DOC = Path(__file__).resolve().parents[1] / "docs" / "forwarding.md"
REQUIRED, TLS, HOSTNAME = object(), object(), object()
_WORDS = {"–": REQUIRED, "none": None, "system trust store": TLS, "this host's name": HOSTNAME}
_UNITS = {"KiB": 1024, "MiB": 1024**2, "s": 1}


def sink_models() -> dict[str, type[BaseModel]]:
    """``type`` value -> config model, from the union the config is validated against."""
    union = get_args(SinkConfig)[0]
    return {get_args(model.model_fields["type"].annotation)[0]: model for model in get_args(union)}


def parse_default(cell: str) -> Any:
    """A default as the doc writes it: ``–`` (required), a word, `a YAML literal`, or a number with a unit."""
    cell = cell.strip()
    if cell in _WORDS:
        return _WORDS[cell]
    if cell.startswith("`") and cell.endswith("`"):
        return yaml.safe_load(cell[1:-1])
    number = re.fullmatch(r"([0-9][0-9,]*(?:\.[0-9]+)?)(?: (KiB|MiB|s))?", cell)
    if number is None:
        raise AssertionError(f"docs/forwarding.md: cannot read the default {cell!r}")
    value = float(number[1].replace(",", "")) * _UNITS.get(number[2] or "s", 1)
    return int(value) if value.is_integer() else value


def tables() -> dict[str, dict[str, Any]]:
    """``{"common" or sink type: {setting: documented default}}`` from the doc's settings tables."""
    found: dict[str, dict[str, Any]] = {}
    section: str | None = None
    for line in DOC.read_text().splitlines():
        if line.startswith("### Settings every sink takes"):
            section = "common"
        elif kind := re.fullmatch(r"`type: ([a-z_]+)`", line):
            section = kind[1]
        elif line.startswith("#"):
            section = None
        elif section and line.startswith("| `"):
            names_cell, default_cell = line.split(" | ")[:2]
            names = re.findall(r"`([a-z_]+)`", names_cell)
            defaults = default_cell.split(" / ")
            assert len(names) == len(defaults), f"docs/forwarding.md: {line!r} pairs settings and defaults badly"
            for name, cell in zip(names, defaults, strict=True):
                assert name not in found.setdefault(section, {}), f"{name} twice in the {section} table"
                found[section][name] = parse_default(cell)
    return found


def check(model: type[BaseModel], name: str, documented: Any) -> None:
    field: FieldInfo = model.model_fields[name]
    where = f"{model.__name__}.{name}"
    if documented is REQUIRED:
        assert field.is_required(), f"{where}: documented as required, the code has {field.get_default()!r}"
        return
    assert not field.is_required(), f"{where}: required in the code, documented with a default"
    if documented is TLS:
        assert field.get_default() in (None, TlsClientSettings()), f"{where}: not the system trust store"
    elif documented is HOSTNAME:
        assert field.default_factory is socket.gethostname, f"{where}: the default is not the host's name"
    else:
        actual = field.get_default(call_default_factory=True)
        assert (type(actual) is bool) == (type(documented) is bool), f"{where}: {documented!r} vs {actual!r}"
        assert documented == actual, f"{where}: docs/forwarding.md says {documented!r}, the code {actual!r}"


def test_the_doc_has_a_table_for_every_sink_type() -> None:
    assert set(tables()) == {"common", *sink_models()}


def test_every_common_setting_is_documented_with_the_code_default() -> None:
    common = tables()["common"]
    assert set(common) == set(SinkSettings.model_fields), "the common table and SinkSettings differ"
    for name, documented in common.items():
        check(SinkSettings, name, documented)


@pytest.mark.parametrize("kind", sorted(sink_models()))
def test_every_setting_of_each_sink_type_is_documented_with_the_code_default(kind: str) -> None:
    """A sink type's own settings in its table; the common ones hold there too (a type overriding
    a common default would need its own row)."""
    model = sink_models()[kind]
    documented = tables()
    own = set(model.model_fields) - set(SinkSettings.model_fields) - {"type"}
    assert set(documented[kind]) == own, f"the {kind} table and {model.__name__} differ"
    for name, value in {**documented["common"], **documented[kind]}.items():
        check(model, name, value)


def test_defaults_named_in_the_prose_are_the_code_defaults() -> None:
    """ "`retry_initial_seconds` (0.5 s)", "`max_message_bytes` (8192, ...", "`batch_max_records`
    records (5,000 by default)": a number in parentheses right after a setting's name."""
    fields: dict[str, list[Any]] = {}
    for model in (SinkSettings, *sink_models().values()):
        for name, field in model.model_fields.items():
            if not field.is_required() and field.default_factory is None:
                fields.setdefault(name, []).append(field.default)
    text = DOC.read_text()
    pattern = r"`([a-z_]+)`(?: records)? \(([0-9][0-9,.]*(?: (?:KiB|MiB|s))?)(?=[,)]| by default)"
    found = [(name, value) for name, value in re.findall(pattern, text) if name in fields]
    assert len(found) >= 5, found  # the pattern still finds the prose it was written for
    for name, value in found:
        assert parse_default(value) in fields[name], f"docs/forwarding.md: `{name}` ({value}), the code {fields[name]}"


def test_the_parser_reads_what_the_tables_hold() -> None:
    assert parse_default("1 MiB") == 1024 * 1024 and parse_default("0.05") == 0.05
    assert parse_default('`"\\t"`') == "\t" and parse_default("`keylife:audit`") == "keylife:audit"
    assert parse_default("`true`") is True and parse_default("5,000") == 5000
    with pytest.raises(AssertionError):
        parse_default("about a second")
