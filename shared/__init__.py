"""Code both sides use: datasets, the index, the label store, region generators, image readers and writers."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("rat")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+unknown"
