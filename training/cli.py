"""`rat-train`: train RAT from images plus precomputed label maps; eval and restore verbs."""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="rat")
def main() -> None:
    """Train and evaluate the Region Attention Transformer."""
