"""The registry's extensions, in the order they project (see ``keylife.registry.extension``)."""

from __future__ import annotations

from keylife.registry.extension import Extension
from keylife.registry.incidents import IncidentsExtension

EXTENSIONS: tuple[type[Extension], ...] = (IncidentsExtension,)
