"""Load generation and side-by-side benchmarks for trietcd (see README.md)."""

__all__ = ["compare", "unary_noop"]
