"""The report for machines: JSON (the evidence, schema in ``docs/schemas/compliance-report.schema.json``)
and CSV (one row per figure: ``section,path,value``; lists of keys flattened by index)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

import orjson

SKIP_CSV = frozenset({"checkpoint.note", "policy.document"})  # multi-line or nested documents: in the JSON


def to_json(report: dict[str, Any]) -> bytes:
    """Sorted keys, two-space indent, newline at the end: equal reports give equal bytes."""
    return orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def figures(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted path, scalar) for every leaf, in the JSON's order; list items by index."""
    if isinstance(value, dict):
        for name in sorted(value):
            yield from figures(value[name], f"{path}.{name}" if path else name)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from figures(item, f"{path}.{i}")
    else:
        yield path, value


def to_csv(report: dict[str, Any]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["section", "path", "value"])
    for path, value in figures(report):
        if any(path == s or path.startswith(s + ".") for s in SKIP_CSV):
            continue
        text = "" if value is None else ("true" if value is True else "false" if value is False else str(value))
        writer.writerow([path.split(".", 1)[0], path, text])
    return out.getvalue().encode()
