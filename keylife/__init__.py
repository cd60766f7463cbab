"""keylife: key lifecycle governance for DataFold networks."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("datafold-keylife")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+source"
