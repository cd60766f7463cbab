"""Render the keylife dashboards to ``dashboards/json/<uid>.json``; ``--check`` compares instead.

    python -m dashboards.generate            # rewrite the JSON files
    python -m dashboards.generate --check    # exit 1 when a committed file differs (CI)

The JSON is committed so Grafana provisions plain files and a review shows what changes on
screen; ``--check`` (and tests/test_dashboards.py) keep it equal to what the modules produce.
Sorted keys, two-space indent and a trailing newline keep the diffs small and stable.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as dm

from dashboards import compliance, fleet, key, pipeline, propagation
from dashboards.common import INPUTS

JSON_DIR = Path(__file__).resolve().parent / "json"
BUILDERS: tuple[Callable[[], dm.Dashboard], ...] = (
    fleet.build,
    key.build,
    propagation.build,
    pipeline.build,
    compliance.build,
)


PLUGIN_NAMES = {"prometheus": "Prometheus", "loki": "Loki"}


def with_inputs(data: dict[str, object]) -> dict[str, object]:
    """``data`` with ``__inputs`` for each ``${DS_…}`` it mentions, and ``__requires``: what
    Grafana's "Import dashboard" reads to ask for the datasources (as its own external export)."""
    text = json.dumps(data)
    used = [(name, plugin) for name, plugin in INPUTS.items() if f"${{{name}}}" in text]
    inputs = [
        {
            "name": name,
            "label": PLUGIN_NAMES[plugin],
            "description": f"{PLUGIN_NAMES[plugin]} holding keylife's data",
            "type": "datasource",
            "pluginId": plugin,
            "pluginName": PLUGIN_NAMES[plugin],
        }
        for name, plugin in used
    ]
    requires = [
        {"type": "datasource", "id": plugin, "name": PLUGIN_NAMES[plugin], "version": "1.0.0"} for _, plugin in used
    ]
    return {"__inputs": inputs, "__requires": requires, **data}


def render(model: dm.Dashboard) -> str:
    """One dashboard as the committed text, with its import inputs."""
    data = json.loads(JSONEncoder().encode(model))
    return json.dumps(with_inputs(data), sort_keys=True, indent=2) + "\n"


def render_all() -> dict[str, str]:
    """File name (``<uid>.json``) -> text, for every dashboard, built fresh in memory."""
    out: dict[str, str] = {}
    for build in BUILDERS:
        model = build()
        out[f"{model.uid}.json"] = render(model)
    return out


def differences(rendered: dict[str, str], directory: Path) -> list[str]:
    """What differs between ``rendered`` and ``directory``: changed, missing and stale files."""
    problems = []
    for name, text in sorted(rendered.items()):
        path = directory / name
        if not path.exists():
            problems.append(f"{path}: missing")
        elif path.read_text(encoding="utf-8") != text:
            problems.append(f"{path}: differs from what the generator produces")
    for path in sorted(directory.glob("*.json")):
        if path.name not in rendered:
            problems.append(f"{path}: not produced by the generator (stale?)")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    """Write (or ``--check``) the JSON files; the exit code is 1 when a check finds a difference."""
    parser = argparse.ArgumentParser(prog="python -m dashboards.generate", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the files instead of writing them")
    parser.add_argument("--out", type=Path, default=JSON_DIR, help=f"directory of the JSON files (default {JSON_DIR})")
    args = parser.parse_args(argv)
    rendered = render_all()
    if args.check:
        problems = differences(rendered, args.out)
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print("run: python -m dashboards.generate", file=sys.stderr)
            return 1
        print(f"{len(rendered)} dashboards up to date in {args.out}")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in rendered.items():
        (args.out / name).write_text(text, encoding="utf-8")
    for path in sorted(args.out.glob("*.json")):
        if path.name not in rendered:  # left alone: --out may hold other files; --check reports it
            print(f"{path}: not produced by the generator; delete it if it is a removed dashboard", file=sys.stderr)
    print(f"wrote {len(rendered)} dashboards to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
