"""LaSagnA: segmentation with complex queries (present and absent classes)."""

__version__ = "0.1.0"
