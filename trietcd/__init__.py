"""trietcd: etcd v3.5, written in Python."""

__version__ = "0.1.0"
# The etcd release whose API, flags and data formats trietcd follows.
etcd_version = "3.5.1"
etcd_cluster_version = "3.5.0"

__all__ = ["__version__", "etcd_version", "etcd_cluster_version", "serve"]


def __getattr__(name: str):
    # trietcd.serve (trietcd/embed.py) is loaded on first use: importing any
    # part of trietcd should not load the configuration and the server.
    if name == "serve":
        from trietcd.embed import serve

        return serve
    raise AttributeError(f"module 'trietcd' has no attribute {name!r}")
