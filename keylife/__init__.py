"""keylife: key lifecycle governance for DataFold networks."""

from __future__ import annotations


def __getattr__(name: str) -> str:
    """``__version__`` on first use: importlib.metadata costs ~25 ms, which every ``keylife``
    command would pay at start-up for a string only ``--version`` and the API's OpenAPI print."""
    if name != "__version__":
        raise AttributeError(f"module 'keylife' has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        value = version("datafold-keylife")
    except PackageNotFoundError:  # running from a source tree without an install
        value = "0.0.0+source"
    globals()["__version__"] = value
    return value
