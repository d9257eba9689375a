"""Baseline networks from well-kept packages, as registered models (:mod:`rat.training.model.registry`).

Each adapter builds its package's own class with random weights (nothing is downloaded) and imports the
package only then; :mod:`rat.training.model.adapters.base` wraps it so that any image size goes in and the
input's size comes out.
"""
