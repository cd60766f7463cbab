"""Which keys a bulk plan or a lockdown acts on: a selector, validated field by field, resolved to
the sorted key set in one registry snapshot, and the digest that pins that set to its action.

The digest is what makes "execute exactly what was shown" checkable: a plan executes only while
the selector still resolves to the set its digest names (``keylife.response.bulk``).
"""

from __future__ import annotations

import hashlib
import sqlite3
from datetime import datetime
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from keylife.domain.events import KeyId, Name, Word
from keylife.domain.lifecycle import KeyState
from keylife.registry.queries import HELD_BY_NODE, ts

MAX_IDS = 100_000
_CHUNK = 900  # ids per IN (...): below SQLite's default variable limit


class SelectorError(ValueError):
    """A selector that cannot be resolved; ``errors`` name each field and what is wrong with it."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        super().__init__("; ".join(f"{e['field']}: {e['message']}" for e in errors))
        self.errors = errors


class Selector(BaseModel):
    """Every field narrows the set (AND); a selector with no field at all is refused, so a typo
    cannot select the whole fleet."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    states: Annotated[list[KeyState], Field(min_length=1, max_length=7)] | None = None
    algorithm: Word | None = None
    purpose: Word | None = None
    owner: Name | None = None
    node: Name | None = None
    expiring_before: AwareDatetime | None = None
    created_before: AwareDatetime | None = None
    ids: Annotated[list[KeyId], Field(min_length=1, max_length=MAX_IDS)] | None = None
    all: bool = False  # explicit "every key": the only way to select without a filter

    def describe(self) -> dict[str, Any]:
        """The selector as stored and journaled (JSON types, times in UTC); ids as a count."""
        out = self.model_dump(mode="json", exclude_none=True, exclude_defaults=True)
        if self.ids is not None:
            out["ids"] = len(self.ids)
        return out

    def stored(self) -> dict[str, Any]:
        """The selector whole (ids included), to resolve it again at execution."""
        return self.model_dump(mode="json", exclude_none=True, exclude_defaults=True)


def parse_selector(raw: Any, prefix: str = "selector") -> Selector:
    """A Selector or a SelectorError naming each bad field as ``selector.<field>``."""
    if not isinstance(raw, dict):
        raise SelectorError([{"field": prefix, "message": "must be an object"}])
    try:
        selector = Selector.model_validate(raw)
    except ValidationError as exc:
        errors = []
        for e in exc.errors()[:20]:
            loc = ".".join(str(p) for p in e["loc"][:2])
            errors.append({"field": f"{prefix}.{loc}" if loc else prefix, "message": e["msg"]})
        raise SelectorError(errors) from None
    filters = selector.model_dump(exclude_none=True, exclude_defaults=True)
    if not filters:
        message = "no filter given; name at least one field, or all: true to select every key"
        raise SelectorError([{"field": prefix, "message": message}])
    if selector.all and len(filters) > 1:
        raise SelectorError([{"field": f"{prefix}.all", "message": "all: true cannot be combined with filters"}])
    return selector


def resolve(conn: sqlite3.Connection, selector: Selector) -> list[str]:
    """The sorted key ids the selector matches, read in one snapshot of ``conn`` (a read-only
    registry connection of this thread)."""
    where: list[str] = []
    params: list[Any] = []
    if selector.states:
        where.append(f"state IN ({', '.join('?' * len(selector.states))})")
        params += [s.value for s in selector.states]
    for column in ("algorithm", "purpose", "owner"):
        value = getattr(selector, column)
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if selector.node is not None:
        where.append(f"key_id IN ({HELD_BY_NODE})")
        params += [selector.node, selector.node]
    if selector.expiring_before is not None:
        where.append("expires_at IS NOT NULL AND expires_at < ?")
        params.append(_ts(selector.expiring_before))
    if selector.created_before is not None:
        where.append("created_at < ?")
        params.append(_ts(selector.created_before))
    conn.execute("BEGIN")
    try:
        if selector.ids is None:
            sql = "SELECT key_id FROM keys" + (" WHERE " + " AND ".join(where) if where else "")
            found = [k for (k,) in conn.execute(sql, params)]
        else:
            found = []
            ids = sorted(set(selector.ids))
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start : start + _CHUNK]
                clause = " AND ".join([f"key_id IN ({', '.join('?' * len(chunk))})", *where])
                found += [k for (k,) in conn.execute(f"SELECT key_id FROM keys WHERE {clause}", [*chunk, *params])]
    finally:
        conn.execute("COMMIT")
    found.sort()
    return found


def _ts(value: datetime) -> str:
    return ts(value.isoformat())


def digest(keys: list[str], action: str) -> str:
    """SHA-256 over the action and the sorted key list (newline-separated: key ids hold no newline)."""
    h = hashlib.sha256(f"keylife-bulk-v1\n{action}\n{len(keys)}\n".encode())
    for key in keys:
        h.update(key.encode() + b"\n")
    return h.hexdigest()


def difference(planned: list[str], now: list[str], cap: int = 100) -> dict[str, Any]:
    """What changed between the planned set and the current one (capped lists, exact counts)."""
    before, after = set(planned), set(now)
    added, removed = sorted(after - before), sorted(before - after)
    return {
        "added_count": len(added),
        "removed_count": len(removed),
        "added": added[:cap],
        "removed": removed[:cap],
    }
