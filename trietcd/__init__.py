"""trietcd: etcd v3.5, written in Python."""

__version__ = "0.1.0"
# The etcd release whose API, flags and data formats trietcd follows.
etcd_version = "3.5.1"
etcd_cluster_version = "3.5.0"

__all__ = ["__version__", "etcd_version", "etcd_cluster_version"]
