"""Load generation and side-by-side benchmarks for trietcd (see README.md)."""

__all__ = ["grpc_h2", "h2load", "report", "unary_noop"]
