"""Code both sides use: datasets, the index, the label store, region generators, image readers and writers."""

from importlib.metadata import PackageNotFoundError, version

#: The distribution that installs the ``rat`` import package (``pip install rat-restore``; the name ``rat`` on
#: the package index is another project).
DISTRIBUTION = "rat-restore"

try:
    __version__ = version(DISTRIBUTION)
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+unknown"
