"""fieldbox's model gateway: backends, routing, dialects, structured output."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("fieldbox")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+src"
