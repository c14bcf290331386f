"""Synthetic CTPA phantoms (see :mod:`pe_segmentation.data.synthetic` for the public API)."""
