"""The one refusal type of keylife.response: the API turns it into application/problem+json."""

from __future__ import annotations

from typing import Any


class Refused(Exception):
    """An operation refused with an HTTP status, a problem kind, a title, what was wrong, and extra members."""

    def __init__(self, status: int, kind: str, title: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status, self.kind, self.title, self.detail, self.extra = status, kind, title, detail, extra
