"""The registry's extensions, in the order they project (see ``keylife.registry.extension``)."""

from __future__ import annotations

from keylife.registry.extension import Extension

EXTENSIONS: tuple[type[Extension], ...] = ()
