"""Bulk plans on disk (data_dir/plans/): a plan must outlive the process that made it, so that it
executes by id later and a plan a crash interrupted resumes where it stopped.

Two files per plan: ``<id>.keys`` (the sorted key list, written once) and ``<id>.json`` (the plan
and its progress, replaced durably after every batch). Both 0600: key ids are not secret, but a
plan names who may act on what.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson

from keylife.common.files import replace_durably

PLAN_ID = re.compile(r"plan-[0-9a-f]{16}")


class PlanStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    def _path(self, plan_id: str, suffix: str) -> Path:
        if not PLAN_ID.fullmatch(plan_id):
            raise KeyError(plan_id)
        return self.directory / f"{plan_id}{suffix}"

    def create(self, plan: dict[str, Any], keys: list[str]) -> None:
        replace_durably(self._path(plan["plan"], ".keys"), "\n".join(keys).encode(), 0o600)
        self.save(plan)

    def save(self, plan: dict[str, Any]) -> None:
        replace_durably(self._path(plan["plan"], ".json"), orjson.dumps(plan), 0o600)

    def load(self, plan_id: str) -> dict[str, Any] | None:
        try:
            return orjson.loads(self._path(plan_id, ".json").read_bytes())
        except (KeyError, FileNotFoundError):
            return None

    def keys(self, plan_id: str) -> list[str]:
        text = self._path(plan_id, ".keys").read_text()
        return text.split("\n") if text else []

    def all(self) -> list[dict[str, Any]]:
        plans = []
        for path in sorted(self.directory.glob("plan-*.json")):
            found = self.load(path.stem)
            if found is not None:
                plans.append(found)
        return plans
