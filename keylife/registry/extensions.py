"""The registry's extensions, in the order they project (see ``keylife.registry.extension``)."""

from __future__ import annotations

from keylife.registry.extension import Extension
from keylife.registry.plans import PlansExtension

EXTENSIONS: tuple[type[Extension], ...] = (
    PlansExtension,  # bulk plans, lockdowns, approvals (issue 14, BULK)
)
