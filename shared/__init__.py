"""Code both sides use: image readers, dataset manifests, the label-map store schema."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("rat")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+unknown"
