"""Whole-image inference: tiling, scores, evaluation and restoration."""
