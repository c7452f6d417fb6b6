"""A page file with a copy-on-write B+tree in bbolt's on-disk format (knows nothing of etcd)."""

__all__: list[str] = []
