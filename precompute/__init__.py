"""Mask precompute: SAM (or superpixels) once over every LQ image, label maps into a zarr store."""
